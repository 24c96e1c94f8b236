package emdl

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// Labels of every key derivation. They are part of the format (SPEC.md §4):
// changing one changes every key. All info strings are unambiguous: the fixed
// labels continue "cml/v1/emdl" with '/', a file key's info continues it with
// the suite id's high byte, which is 0x00 for every suite below 256.
const (
	labelFileKey     = "cml/v1/emdl"           // ‖ suite (u16 BE) ‖ path
	labelManifestKey = "cml/v1/emdl/manifest"  // ‖ suite (u16 BE)
	labelKeyCheck    = "cml/v1/emdl/key-check" // key commitment, see keyCheck
	labelHeaderMAC   = "cml/v1/emdl/header-mac"
	labelPayload     = "cml/v1/emdl/payload"
)

const (
	saltSize     = 32
	modelIDSize  = 16
	keyCheckSize = 32
	macSize      = sha256.Size
	digestSize   = sha256.Size
	tagSize      = 16 // AES-GCM tag
	nonceSize    = 12 // AES-GCM standard nonce: 11-byte chunk index ‖ last flag

	lastChunkFlag = 0x01
)

// fileKeys are the two keys derived from one file's (or the manifest's)
// K_file: one authenticates the header, the other encrypts the chunks.
type fileKeys struct {
	headerMAC []byte
	aead      cipher.AEAD
}

// keyCheck is the key commitment stored in every header: a value derived
// from the DEK and the header's salt only. Comparing it (in constant time)
// before anything else tells a wrong key apart from tampering, and because
// the header – including this value – is bound into every chunk's AAD, a
// ciphertext can only ever be opened under the one DEK it commits to: this
// closes AES-GCM's lack of key commitment (SPEC.md §6).
func keyCheck(dek, salt []byte) []byte {
	return derive(dek, salt, labelKeyCheck)
}

func keyCheckMatches(dek, salt, want []byte) bool {
	return subtle.ConstantTimeCompare(keyCheck(dek, salt), want) == 1
}

// fileKey is K_file = HKDF-SHA256(DEK, salt, "cml/v1/emdl" ‖ suite ‖ path).
// Binding the path means a file moved to another path no longer verifies.
func fileKey(dek, salt []byte, suite uint16, path string) []byte {
	info := make([]byte, 0, len(labelFileKey)+2+len(path))
	info = append(info, labelFileKey...)
	info = binary.BigEndian.AppendUint16(info, suite)
	info = append(info, path...)
	return derive(dek, salt, string(info))
}

// manifestKey is K_manifest = HKDF-SHA256(DEK, salt, "cml/v1/emdl/manifest" ‖ suite).
func manifestKey(dek, salt []byte, suite uint16) []byte {
	info := binary.BigEndian.AppendUint16([]byte(labelManifestKey), suite)
	return derive(dek, salt, string(info))
}

func derive(secret, salt []byte, info string) []byte {
	k, err := hkdf.Key(sha256.New, secret, salt, info, 32)
	if err != nil {
		// Only possible for an output length HKDF cannot produce.
		panic("emdl: internal error: hkdf: " + err.Error())
	}
	return k
}

// newFileKeys splits K_file into the header MAC key and the payload key with
// HKDF-Expand (K_file is already uniformly random, so no second Extract).
func newFileKeys(suite uint16, kFile []byte) (*fileKeys, error) {
	if suite != suiteAES256GCMStream {
		panic("emdl: internal error: keys for an unsupported suite")
	}
	macKey, err := hkdf.Expand(sha256.New, kFile, labelHeaderMAC, 32)
	if err != nil {
		panic("emdl: internal error: hkdf: " + err.Error())
	}
	payload, err := hkdf.Expand(sha256.New, kFile, labelPayload, 32)
	if err != nil {
		panic("emdl: internal error: hkdf: " + err.Error())
	}
	block, err := aes.NewCipher(payload)
	if err != nil {
		panic("emdl: internal error: aes: " + err.Error())
	}
	// cipher.NewGCM refuses caller-chosen nonces in FIPS 140-only mode
	// (GODEBUG=fips140=only); the reserved random-nonce suite is for that.
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("emdl: suite %s: %w", suiteName(suite), err)
	}
	return &fileKeys{headerMAC: macKey, aead: aead}, nil
}

// headerMAC is HMAC-SHA256(K_header, header bytes before the MAC field).
func (k *fileKeys) mac(headerWithoutMAC []byte) []byte {
	h := hmac.New(sha256.New, k.headerMAC)
	h.Write(headerWithoutMAC)
	return h.Sum(nil)
}

func (k *fileKeys) verifyMAC(headerWithoutMAC, mac []byte) bool {
	return hmac.Equal(k.mac(headerWithoutMAC), mac)
}

// chunkNonce writes the STREAM nonce of chunk idx: the index as an 11-byte
// big-endian integer, then 0x01 for the last chunk of the file, else 0x00.
// A 64-bit index always fits: the three high bytes stay zero.
func chunkNonce(nonce *[nonceSize]byte, idx uint64, last bool) {
	nonce[0], nonce[1], nonce[2] = 0, 0, 0
	binary.BigEndian.PutUint64(nonce[3:11], idx)
	nonce[11] = 0
	if last {
		nonce[11] = lastChunkFlag
	}
}

// sealChunk encrypts buf[:n] in place; buf must have room for the tag. It
// returns the ciphertext, buf[:n+tagSize]. nonce is scratch space owned by
// the caller so that the chunk path does not allocate.
func sealChunk(aead cipher.AEAD, aad []byte, nonce *[nonceSize]byte, idx uint64, last bool, buf []byte, n int) []byte {
	chunkNonce(nonce, idx, last)
	return aead.Seal(buf[:0], nonce[:], buf[:n], aad)
}

// openChunk decrypts and authenticates ct in place and returns the plaintext,
// ct[:len(ct)-tagSize].
func openChunk(aead cipher.AEAD, aad []byte, nonce *[nonceSize]byte, idx uint64, last bool, ct []byte) ([]byte, error) {
	return openChunkTo(aead, aad, nonce, idx, last, ct[:0], ct)
}

// openChunkTo is openChunk with the plaintext appended to dst, which must
// be ct[:0] or not overlap ct.
func openChunkTo(aead cipher.AEAD, aad []byte, nonce *[nonceSize]byte, idx uint64, last bool, dst, ct []byte) ([]byte, error) {
	chunkNonce(nonce, idx, last)
	return aead.Open(dst, nonce[:], ct, aad)
}
