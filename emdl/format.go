package emdl

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"
)

// KeySize is the size of a data-encryption key (DEK): AES-256.
const KeySize = 32

// Limits. A reader refuses anything beyond them with ErrUnsupported (sizes)
// or ErrUnsafePath (paths); an encryptor never produces it.
const (
	DefaultChunkSize = 1 << 20 // plaintext bytes per chunk
	MinChunkSize     = 64
	MaxChunkSize     = 8 << 20
	MaxFiles         = 1 << 16 // files in one model
	MaxPathLen       = 1024    // bytes of a relative path
	MaxNameLen       = 255     // bytes of one path element
	MaxKeyIDLen      = 128
	MaxManifestSize  = 8 << 20 // bytes of the manifest body's plaintext
	MaxFileSize      = 1 << 62 // plaintext bytes of one file, and of a whole model
)

// ManifestName is the manifest's file name at the root of a model directory.
// It is reserved: no plaintext file at the root of a model may have it.
const ManifestName = "MANIFEST.emdl"

// Wire constants (SPEC.md §3).
const (
	magic         = "EMDL"
	formatVersion = 1
	kindFile      = 'F'
	kindManifest  = 'M'

	flagSingleFile = 0x01

	fileHeaderFixed     = 137 // file header size without the key id
	manifestHeaderFixed = 146 // manifest header size without the key id
	entryFixed          = 2 + 8 + 4 + sha256Size + digestSize

	sha256Size = 32
)

// Suites. Only suiteAES256GCMStream is implemented; the others are reserved
// so that a v1 reader refuses them by name (SPEC.md §7).
const (
	suiteAES256GCMStream     uint16 = 1 // AES-256-GCM, STREAM nonces
	suiteAES256GCMSIVStream  uint16 = 2 // reserved: AES-256-GCM-SIV, STREAM nonces
	suiteAES256GCMRandNonces uint16 = 3 // reserved: AES-256-GCM, random 96-bit nonces (FIPS 140-3 mode)
)

func suiteName(s uint16) string {
	switch s {
	case suiteAES256GCMStream:
		return "AES-256-GCM-STREAM"
	case suiteAES256GCMSIVStream:
		return "AES-256-GCM-SIV-STREAM"
	case suiteAES256GCMRandNonces:
		return "AES-256-GCM-RANDOM-NONCE"
	}
	return fmt.Sprintf("unknown suite %d", s)
}

// fileHeader is the header in front of every encrypted file (SPEC.md §3.1).
type fileHeader struct {
	suite      uint16
	chunkSize  uint32
	length     uint64 // plaintext bytes
	modelID    [modelIDSize]byte
	salt       [saltSize]byte
	keyVersion uint32
	keyID      string
	keyCheck   [keyCheckSize]byte
	mac        [macSize]byte
}

func fileHeaderSize(keyIDLen int) int { return fileHeaderFixed + keyIDLen }

// marshal returns the header's bytes; the last macSize bytes are the MAC.
func (h *fileHeader) marshal() []byte {
	b := make([]byte, 0, fileHeaderSize(len(h.keyID)))
	b = append(b, magic...)
	b = append(b, formatVersion, kindFile)
	b = binary.BigEndian.AppendUint16(b, h.suite)
	b = binary.BigEndian.AppendUint32(b, h.chunkSize)
	b = binary.BigEndian.AppendUint64(b, h.length)
	b = append(b, h.modelID[:]...)
	b = append(b, h.salt[:]...)
	b = binary.BigEndian.AppendUint32(b, h.keyVersion)
	b = append(b, byte(len(h.keyID)))
	b = append(b, h.keyID...)
	b = append(b, h.keyCheck[:]...)
	b = append(b, h.mac[:]...)
	if len(b) != fileHeaderSize(len(h.keyID)) {
		panic("emdl: internal error: file header size")
	}
	return b
}

// chunks is the number of chunks of the file: at least one, so that even an
// empty file carries one authenticated (empty, last) chunk.
func (h *fileHeader) chunks() uint64 {
	if h.length == 0 {
		return 1
	}
	return (h.length + uint64(h.chunkSize) - 1) / uint64(h.chunkSize)
}

// encryptedSize is the exact size of the encrypted file. The limits on
// length and chunk size keep it far below 2^63.
func (h *fileHeader) encryptedSize() int64 {
	return int64(fileHeaderSize(len(h.keyID))) + int64(h.length) + int64(h.chunks())*tagSize
}

// parseFileHeader parses a file header from the start of b and returns it
// with its size. It checks structure and limits only: no key is involved.
func parseFileHeader(b []byte) (*fileHeader, int, error) {
	if err := parsePrefix(b, kindFile); err != nil {
		return nil, 0, err
	}
	if len(b) < fileHeaderFixed {
		return nil, 0, newError("", ErrTruncated, "header truncated")
	}
	h := &fileHeader{
		suite:      binary.BigEndian.Uint16(b[6:]),
		chunkSize:  binary.BigEndian.Uint32(b[8:]),
		length:     binary.BigEndian.Uint64(b[12:]),
		keyVersion: binary.BigEndian.Uint32(b[68:]),
	}
	copy(h.modelID[:], b[20:36])
	copy(h.salt[:], b[36:68])
	n := int(b[72])
	if err := checkKeyIDLen(n); err != nil {
		return nil, 0, err
	}
	size := fileHeaderSize(n)
	if len(b) < size {
		return nil, 0, newError("", ErrTruncated, "header truncated")
	}
	h.keyID = string(b[73 : 73+n])
	copy(h.keyCheck[:], b[73+n:105+n])
	copy(h.mac[:], b[105+n:137+n])
	if err := checkChunkSize(h.chunkSize); err != nil {
		return nil, 0, err
	}
	if h.length > MaxFileSize {
		return nil, 0, newError("", ErrUnsupported, fmt.Sprintf("plaintext length %d exceeds the limit of %d bytes", h.length, uint64(MaxFileSize)))
	}
	if err := checkKeyRef(h.keyID, h.keyVersion); err != nil {
		return nil, 0, err
	}
	return h, size, nil
}

// manifestHeader is the manifest's clear, authenticated header (SPEC.md §3.2):
// what Inspect shows.
type manifestHeader struct {
	suite      uint16
	chunkSize  uint32
	files      uint32
	totalSize  uint64
	flags      uint8
	modelID    [modelIDSize]byte
	salt       [saltSize]byte
	keyVersion uint32
	keyID      string
	bodyLen    uint32 // ciphertext bytes of the body, tag included
	keyCheck   [keyCheckSize]byte
	mac        [macSize]byte
}

func manifestHeaderSize(keyIDLen int) int { return manifestHeaderFixed + keyIDLen }

func (h *manifestHeader) single() bool { return h.flags&flagSingleFile != 0 }

func (h *manifestHeader) marshal() []byte {
	b := make([]byte, 0, manifestHeaderSize(len(h.keyID)))
	b = append(b, magic...)
	b = append(b, formatVersion, kindManifest)
	b = binary.BigEndian.AppendUint16(b, h.suite)
	b = binary.BigEndian.AppendUint32(b, h.chunkSize)
	b = binary.BigEndian.AppendUint32(b, h.files)
	b = binary.BigEndian.AppendUint64(b, h.totalSize)
	b = append(b, h.flags)
	b = append(b, h.modelID[:]...)
	b = append(b, h.salt[:]...)
	b = binary.BigEndian.AppendUint32(b, h.keyVersion)
	b = append(b, byte(len(h.keyID)))
	b = append(b, h.keyID...)
	b = binary.BigEndian.AppendUint32(b, h.bodyLen)
	b = append(b, h.keyCheck[:]...)
	b = append(b, h.mac[:]...)
	if len(b) != manifestHeaderSize(len(h.keyID)) {
		panic("emdl: internal error: manifest header size")
	}
	return b
}

// parseManifestHeader parses the manifest header from the start of b and
// returns it with its size. Structure and limits only: no key is involved.
func parseManifestHeader(b []byte) (*manifestHeader, int, error) {
	if err := parsePrefix(b, kindManifest); err != nil {
		return nil, 0, err
	}
	if len(b) < manifestHeaderFixed {
		return nil, 0, newError("", ErrTruncated, "manifest header truncated")
	}
	h := &manifestHeader{
		suite:      binary.BigEndian.Uint16(b[6:]),
		chunkSize:  binary.BigEndian.Uint32(b[8:]),
		files:      binary.BigEndian.Uint32(b[12:]),
		totalSize:  binary.BigEndian.Uint64(b[16:]),
		flags:      b[24],
		keyVersion: binary.BigEndian.Uint32(b[73:]),
	}
	copy(h.modelID[:], b[25:41])
	copy(h.salt[:], b[41:73])
	n := int(b[77])
	if err := checkKeyIDLen(n); err != nil {
		return nil, 0, err
	}
	size := manifestHeaderSize(n)
	if len(b) < size {
		return nil, 0, newError("", ErrTruncated, "manifest header truncated")
	}
	h.keyID = string(b[78 : 78+n])
	h.bodyLen = binary.BigEndian.Uint32(b[78+n:])
	copy(h.keyCheck[:], b[82+n:114+n])
	copy(h.mac[:], b[114+n:146+n])

	if err := checkChunkSize(h.chunkSize); err != nil {
		return nil, 0, err
	}
	if h.flags&^flagSingleFile != 0 {
		return nil, 0, newError("", ErrUnsupported, fmt.Sprintf("unknown manifest flags %#02x", h.flags))
	}
	if h.files == 0 || h.files > MaxFiles {
		return nil, 0, newError("", ErrUnsupported, fmt.Sprintf("file count %d outside 1..%d", h.files, MaxFiles))
	}
	if h.single() && h.files != 1 {
		return nil, 0, newError("", ErrTampered, fmt.Sprintf("single-file model lists %d files", h.files))
	}
	if h.totalSize > MaxFileSize {
		return nil, 0, newError("", ErrUnsupported, fmt.Sprintf("total size %d exceeds the limit of %d bytes", h.totalSize, uint64(MaxFileSize)))
	}
	if h.bodyLen < tagSize+uint32(h.files)*(entryFixed+1) {
		return nil, 0, newError("", ErrTampered, fmt.Sprintf("manifest body of %d bytes cannot hold %d entries", h.bodyLen, h.files))
	}
	if h.bodyLen > MaxManifestSize+tagSize {
		return nil, 0, newError("", ErrUnsupported, fmt.Sprintf("manifest body of %d bytes exceeds the limit of %d bytes", h.bodyLen, MaxManifestSize))
	}
	if err := checkKeyRef(h.keyID, h.keyVersion); err != nil {
		return nil, 0, err
	}
	return h, size, nil
}

// parsePrefix checks the eight bytes every header starts with. Only the
// version is read before the magic and kind checks pass, and only the
// version and suite decide ErrUnsupported: a v1 reader never guesses at the
// layout of another version.
func parsePrefix(b []byte, kind byte) error {
	if len(b) < len(magic) {
		if strings.HasPrefix(magic, string(b)) {
			return newError("", ErrTruncated, "header truncated")
		}
		return newError("", ErrTampered, "not an EMDL file (bad magic)")
	}
	if string(b[:len(magic)]) != magic {
		return newError("", ErrTampered, "not an EMDL file (bad magic)")
	}
	if len(b) < 8 {
		return newError("", ErrTruncated, "header truncated")
	}
	if b[4] != formatVersion {
		return newError("", ErrUnsupported, fmt.Sprintf("format version %d is not supported (this reader knows version %d)", b[4], formatVersion))
	}
	if b[5] != kind {
		return newError("", ErrTampered, fmt.Sprintf("header kind %q where %q was expected", b[5], kind))
	}
	switch s := binary.BigEndian.Uint16(b[6:]); s {
	case suiteAES256GCMStream:
	case suiteAES256GCMSIVStream, suiteAES256GCMRandNonces:
		return newError("", ErrUnsupported, fmt.Sprintf("suite %d (%s) is reserved and not supported by this reader", s, suiteName(s)))
	default:
		return newError("", ErrUnsupported, fmt.Sprintf("unknown suite %d", s))
	}
	return nil
}

func checkKeyIDLen(n int) error {
	if n == 0 || n > MaxKeyIDLen {
		return newError("", ErrTampered, fmt.Sprintf("key id length %d outside 1..%d", n, MaxKeyIDLen))
	}
	return nil
}

func checkChunkSize(c uint32) error {
	if c < MinChunkSize || c > MaxChunkSize {
		return newError("", ErrUnsupported, fmt.Sprintf("chunk size %d outside %d..%d", c, MinChunkSize, MaxChunkSize))
	}
	return nil
}

func checkKeyRef(id string, version uint32) error {
	if !validKeyID(id) {
		return newError("", ErrTampered, "malformed key id")
	}
	if version == 0 {
		return newError("", ErrTampered, "key version 0")
	}
	return nil
}

// validKeyID reports whether id matches [A-Za-z0-9._-]{1,128}.
func validKeyID(id string) bool {
	if len(id) == 0 || len(id) > MaxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// entry is one file of the manifest body (SPEC.md §3.3).
type entry struct {
	path         string
	size         uint64
	mode         uint32 // permission bits only (0o777)
	sha256       [sha256Size]byte
	headerDigest [digestSize]byte
}

func marshalEntries(entries []entry) []byte {
	n := 0
	for i := range entries {
		n += entryFixed + len(entries[i].path)
	}
	b := make([]byte, 0, n)
	for i := range entries {
		e := &entries[i]
		b = binary.BigEndian.AppendUint16(b, uint16(len(e.path)))
		b = append(b, e.path...)
		b = binary.BigEndian.AppendUint64(b, e.size)
		b = binary.BigEndian.AppendUint32(b, e.mode)
		b = append(b, e.sha256[:]...)
		b = append(b, e.headerDigest[:]...)
	}
	return b
}

// parseEntries parses and checks the decrypted manifest body against its
// header: exactly h.files entries in strictly increasing byte order of path,
// every path safe, no file that is also a directory of another, sizes that
// add up to h.totalSize, and nothing after the last entry.
func parseEntries(b []byte, h *manifestHeader) ([]entry, error) {
	if len(b) > MaxManifestSize {
		return nil, newError("", ErrUnsupported, fmt.Sprintf("manifest body of %d bytes exceeds the limit of %d bytes", len(b), MaxManifestSize))
	}
	entries := make([]entry, 0, min(int(h.files), len(b)/entryFixed))
	var total uint64
	for i := uint32(0); i < h.files; i++ {
		if len(b) < 2 {
			return nil, newError("", ErrTampered, fmt.Sprintf("manifest body ends inside entry %d", i))
		}
		pl := int(binary.BigEndian.Uint16(b))
		if len(b) < entryFixed+pl {
			return nil, newError("", ErrTampered, fmt.Sprintf("manifest body ends inside entry %d", i))
		}
		e := entry{path: string(b[2 : 2+pl])}
		b = b[2+pl:]
		e.size = binary.BigEndian.Uint64(b)
		e.mode = binary.BigEndian.Uint32(b[8:])
		copy(e.sha256[:], b[12:44])
		copy(e.headerDigest[:], b[44:76])
		b = b[76:]

		if reason := checkPath(e.path); reason != "" {
			return nil, newError("", ErrUnsafePath, fmt.Sprintf("entry %q: %s", e.path, reason))
		}
		if h.single() && strings.Contains(e.path, "/") {
			return nil, newError("", ErrUnsafePath, fmt.Sprintf("entry %q: a single-file model's path has no directory", e.path))
		}
		if e.mode&^0o777 != 0 {
			return nil, newError("", ErrUnsafePath, fmt.Sprintf("entry %q: mode %#o is not the permission bits of a regular file", e.path, e.mode))
		}
		if e.size > MaxFileSize-total {
			return nil, newError("", ErrTampered, fmt.Sprintf("entry %q: sizes exceed the manifest's total", e.path))
		}
		total += e.size
		if len(entries) > 0 {
			prev := entries[len(entries)-1].path
			if e.path == prev {
				return nil, newError("", ErrUnsafePath, fmt.Sprintf("entry %q: duplicate", e.path))
			}
			if e.path < prev {
				return nil, newError("", ErrTampered, fmt.Sprintf("entry %q: entries are not sorted", e.path))
			}
		}
		entries = append(entries, e)
	}
	if len(b) != 0 {
		return nil, newError("", ErrTampered, fmt.Sprintf("%d bytes after the last manifest entry", len(b)))
	}
	if total != h.totalSize {
		return nil, newError("", ErrTampered, fmt.Sprintf("entry sizes add up to %d, the header says %d", total, h.totalSize))
	}
	if err := checkNoFileIsDir(entries); err != nil {
		return nil, err
	}
	return entries, nil
}

// checkNoFileIsDir refuses a path that is a parent directory of another
// ("a" and "a/b"): it could not be created, and on a careless writer would
// turn one entry into a directory prefix of another.
func checkNoFileIsDir(entries []entry) error {
	files := make(map[string]struct{}, len(entries))
	for i := range entries {
		files[entries[i].path] = struct{}{}
	}
	for i := range entries {
		p := entries[i].path
		for j := strings.IndexByte(p, '/'); j >= 0; j = nextSlash(p, j) {
			if _, ok := files[p[:j]]; ok {
				return newError("", ErrUnsafePath, fmt.Sprintf("entry %q: %q is both a file and its parent directory", p, p[:j]))
			}
		}
	}
	return nil
}

func nextSlash(p string, after int) int {
	k := strings.IndexByte(p[after+1:], '/')
	if k < 0 {
		return -1
	}
	return after + 1 + k
}

// checkPath returns why p is not a safe relative model path, or "".
func checkPath(p string) string {
	switch {
	case p == "":
		return "empty path"
	case len(p) > MaxPathLen:
		return fmt.Sprintf("longer than %d bytes", MaxPathLen)
	case !utf8.ValidString(p):
		return "not valid UTF-8"
	case strings.IndexByte(p, 0) >= 0:
		return "contains NUL"
	case strings.IndexByte(p, '\\') >= 0:
		return "contains a backslash"
	case p[0] == '/':
		return "absolute path"
	case p == ManifestName:
		return "reserved name"
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return "contains a control character"
		}
	}
	for elem := range strings.SplitSeq(p, "/") {
		switch {
		case elem == "":
			return "empty path element"
		case elem == "." || elem == "..":
			return fmt.Sprintf("%q path element", elem)
		case len(elem) > MaxNameLen:
			return fmt.Sprintf("path element longer than %d bytes", MaxNameLen)
		}
	}
	return ""
}
