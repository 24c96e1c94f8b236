package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"
)

// Decision is the outcome an audit record reports.
type Decision string

// The two decisions. The zero value is invalid, so a record always says.
const (
	Allow Decision = "allow"
	Deny  Decision = "deny"
)

// Hash is the SHA-256 of a record's canonical encoding.
type Hash [sha256.Size]byte

// String returns the hash in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Head names the last record of a chain: its sequence number and hash. The
// head of an empty chain is the zero Head.
type Head struct {
	Seq  uint64
	Hash Hash
}

// Entry is what the caller of an append provides: everything in a record but
// its place in the chain and its time.
type Entry struct {
	RequestID     string // request id returned to the client; printable ASCII, no spaces, ≤128
	Caller        string // caller SPIFFE ID from the verified peer certificate, or "" for the broker itself
	Operation     string // RPC or action name, [A-Za-z0-9_./-]{1,64}
	KeyID         string // "" or a key id
	KeyVersion    uint32 // 0 when not applicable
	PolicyVersion uint32 // 0 when no policy was evaluated
	Decision      Decision
	Reasons       []string          // stable reason codes, [a-z0-9_]{1,64}, at most 32
	QuoteDigest   string            // "" or lower-case hex SHA-256 of the quote
	NonceDigest   string            // "" or lower-case hex SHA-256 of the challenge nonce
	Measurements  map[string]string // TD measurements seen: name [a-z0-9_]{1,32} → lower-case hex ≤ 64 bytes
	Simulated     bool              // the quote came from the TDX simulator's root
	Details       map[string]string // short human-readable facts, name [a-z0-9_]{1,64} → ≤256 bytes; no secrets
}

// Record is one entry of the chain.
type Record struct {
	Seq      uint64
	Time     time.Time // UTC, nanosecond precision
	PrevHash Hash
	Entry
	// Hash is the SHA-256 of the record's encoding. Set by NewRecord and
	// Decode; not itself part of the encoding.
	Hash Hash
}

// Limits on the fields of an Entry.
const (
	maxRequestID    = 128
	maxCaller       = 2048
	maxOperation    = 64
	maxKeyID        = 128
	maxReasons      = 32
	maxReason       = 64
	maxMeasurements = 32
	maxMeasureName  = 32
	maxMeasureHex   = 128
	maxDetails      = 32
	maxDetailName   = 64
	maxDetailValue  = 256
	// A run this long of hex digits or base64 characters in a detail value
	// is refused: 16 and 32 bytes of binary data respectively.
	maxHexRun    = 31
	maxBase64Run = 42
)

// ErrInvalid is wrapped by every validation error of an Entry or Record.
var ErrInvalid = errors.New("audit: invalid record")

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

// Validate checks every field's syntax (see the field comments). It is the
// structural guard against secrets reaching the log.
func (e *Entry) Validate() error {
	if len(e.RequestID) > maxRequestID || !isToken(e.RequestID) {
		return invalid("request_id", "want at most %d printable ASCII characters without spaces", maxRequestID)
	}
	if e.Caller != "" && (len(e.Caller) > maxCaller || !isToken(e.Caller) || !hasPrefix(e.Caller, "spiffe://")) {
		return invalid("caller", "want empty or a spiffe:// ID of at most %d printable characters", maxCaller)
	}
	if !matchSet(e.Operation, 1, maxOperation, isOpChar) {
		return invalid("operation", "want [A-Za-z0-9_./-]{1,%d}", maxOperation)
	}
	if e.KeyID != "" && !matchSet(e.KeyID, 1, maxKeyID, isKeyIDChar) {
		return invalid("key_id", "want empty or [A-Za-z0-9._-]{1,%d}", maxKeyID)
	}
	if e.Decision != Allow && e.Decision != Deny {
		return invalid("decision", "want %q or %q", Allow, Deny)
	}
	if len(e.Reasons) > maxReasons {
		return invalid("reasons", "%d reasons, at most %d", len(e.Reasons), maxReasons)
	}
	for i, r := range e.Reasons {
		if !matchSet(r, 1, maxReason, isCodeChar) {
			return invalid("reasons", "reason %d: want [a-z0-9_]{1,%d}", i, maxReason)
		}
	}
	if e.QuoteDigest != "" && !isDigest(e.QuoteDigest) {
		return invalid("quote_digest", "want empty or 64 lower-case hex digits (SHA-256)")
	}
	if e.NonceDigest != "" && !isDigest(e.NonceDigest) {
		return invalid("nonce_digest", "want empty or 64 lower-case hex digits (SHA-256)")
	}
	if len(e.Measurements) > maxMeasurements {
		return invalid("measurements", "%d entries, at most %d", len(e.Measurements), maxMeasurements)
	}
	for name, v := range e.Measurements {
		if !matchSet(name, 1, maxMeasureName, isCodeChar) {
			return invalid("measurements", "name: want [a-z0-9_]{1,%d}", maxMeasureName)
		}
		if len(v) == 0 || len(v) > maxMeasureHex || len(v)%2 != 0 || !matchSet(v, 1, maxMeasureHex, isLowerHex) {
			return invalid("measurements", "%s: want lower-case hex of 1 to %d bytes", name, maxMeasureHex/2)
		}
	}
	if len(e.Details) > maxDetails {
		return invalid("details", "%d entries, at most %d", len(e.Details), maxDetails)
	}
	for name, v := range e.Details {
		if !matchSet(name, 1, maxDetailName, isCodeChar) {
			return invalid("details", "name: want [a-z0-9_]{1,%d}", maxDetailName)
		}
		if len(v) > maxDetailValue || !isText(v) {
			return invalid("details", "%s: want at most %d bytes of printable UTF-8", name, maxDetailValue)
		}
		if looksBinary(v) {
			return invalid("details", "%s: contains a long hex or base64 run (possible key material); put digests and measurements in their typed fields", name)
		}
	}
	return nil
}

// Digest returns the lower-case hex SHA-256 of b, the form in which a quote
// or nonce may appear in a record.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// NewRecord builds the record that follows prev: Seq = prev.Seq+1,
// PrevHash = prev.Hash, the given time (truncated to UTC nanoseconds). It
// returns the record, with Hash set, and its canonical encoding.
func NewRecord(prev Head, t time.Time, e Entry) (Record, []byte, error) {
	if prev.Seq == ^uint64(0) {
		return Record{}, nil, errors.New("audit: sequence number exhausted")
	}
	r := Record{Seq: prev.Seq + 1, Time: t, PrevHash: prev.Hash, Entry: e}
	raw, err := r.Encode()
	if err != nil {
		return Record{}, nil, err
	}
	// Decode the canonical bytes so the caller gets a record that shares no
	// memory with e and is exactly what a later read returns.
	out, err := Decode(raw)
	if err != nil {
		panic("audit: canonical encoding does not decode: " + err.Error())
	}
	return out, raw, nil
}

// Head returns the chain head this record forms.
func (r *Record) Head() Head { return Head{Seq: r.Seq, Hash: r.Hash} }

const (
	magic   = "CMLAUDIT"
	format1 = 1
)

// Encode returns the canonical encoding (see the package documentation). It
// validates the record first.
func (r *Record) Encode() ([]byte, error) {
	if r.Seq == 0 {
		return nil, invalid("seq", "must be at least 1")
	}
	if r.Time.IsZero() {
		return nil, invalid("time", "must be set")
	}
	ns := r.Time.UnixNano()
	if !time.Unix(0, ns).Equal(r.Time) {
		return nil, invalid("time", "outside the years 1678–2262")
	}
	if err := r.Entry.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 256)
	b = append(b, magic...)
	b = append(b, format1)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(ns))
	b = append(b, r.PrevHash[:]...)
	b = appendStr(b, r.RequestID)
	b = appendStr(b, r.Caller)
	b = appendStr(b, r.Operation)
	b = appendStr(b, r.KeyID)
	b = binary.BigEndian.AppendUint32(b, r.KeyVersion)
	b = binary.BigEndian.AppendUint32(b, r.PolicyVersion)
	if r.Decision == Allow {
		b = append(b, 1)
	} else {
		b = append(b, 2)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Reasons)))
	for _, s := range r.Reasons {
		b = appendStr(b, s)
	}
	b = appendStr(b, r.QuoteDigest)
	b = appendStr(b, r.NonceDigest)
	b = appendMap(b, r.Measurements)
	if r.Simulated {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendMap(b, r.Details)
	return b, nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendMap(b []byte, m map[string]string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(m)))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b = appendStr(b, k)
		b = appendStr(b, m[k])
	}
	return b
}

// Decode parses a canonical encoding, validates it, and sets Hash. Errors
// wrap ErrInvalid and never echo field contents.
func Decode(raw []byte) (Record, error) {
	d := decoder{b: raw}
	if string(d.take(len(magic))) != magic {
		return Record{}, invalid("encoding", "bad magic")
	}
	if v := d.u8(); v != format1 {
		return Record{}, invalid("encoding", "unknown format %d", v)
	}
	var r Record
	r.Seq = d.u64()
	ns := int64(d.u64())
	copy(r.PrevHash[:], d.take(len(r.PrevHash)))
	r.RequestID = d.str()
	r.Caller = d.str()
	r.Operation = d.str()
	r.KeyID = d.str()
	r.KeyVersion = d.u32()
	r.PolicyVersion = d.u32()
	switch d.u8() {
	case 1:
		r.Decision = Allow
	case 2:
		r.Decision = Deny
	default:
		d.fail("decision byte not 1 or 2")
	}
	if n := d.count(maxReasons); n > 0 {
		r.Reasons = make([]string, n)
		for i := range r.Reasons {
			r.Reasons[i] = d.str()
		}
	}
	r.QuoteDigest = d.str()
	r.NonceDigest = d.str()
	r.Measurements = d.strMap(maxMeasurements)
	switch d.u8() {
	case 0:
	case 1:
		r.Simulated = true
	default:
		d.fail("simulated byte not 0 or 1")
	}
	r.Details = d.strMap(maxDetails)
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return Record{}, invalid("encoding", "%s", d.err)
	}
	r.Time = time.Unix(0, ns).UTC()
	if r.Seq == 0 {
		return Record{}, invalid("encoding", "zero seq")
	}
	if err := r.Entry.Validate(); err != nil {
		return Record{}, err
	}
	r.Hash = sha256.Sum256(raw)
	return r, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(msg string) {
	if d.err == nil {
		d.err = errors.New(msg)
	}
	d.b = nil
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return make([]byte, n)
	}
	if n < 0 || n > len(d.b) {
		d.fail("truncated")
		return make([]byte, max(n, 0))
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u8() byte    { return d.take(1)[0] }
func (d *decoder) u32() uint32 { return binary.BigEndian.Uint32(d.take(4)) }
func (d *decoder) u64() uint64 { return binary.BigEndian.Uint64(d.take(8)) }

func (d *decoder) str() string {
	n := d.u32()
	if uint64(n) > uint64(len(d.b)) {
		d.fail("truncated string")
		return ""
	}
	return string(d.take(int(n)))
}

func (d *decoder) count(limit int) int {
	n := d.u32()
	if n > uint32(limit) {
		d.fail(fmt.Sprintf("count %d over limit %d", n, limit))
		return 0
	}
	return int(n)
}

func (d *decoder) strMap(limit int) map[string]string {
	n := d.count(limit)
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	prev := ""
	for i := range n {
		k, v := d.str(), d.str()
		if d.err != nil {
			return nil
		}
		if i > 0 && k <= prev {
			d.fail("map names not in strictly ascending order")
			return nil
		}
		prev = k
		m[k] = v
	}
	return m
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func matchSet(s string, minLen, maxLen int, ok func(byte) bool) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
func isKeyIDChar(c byte) bool { return isAlnum(c) || c == '.' || c == '_' || c == '-' }
func isOpChar(c byte) bool    { return isKeyIDChar(c) || c == '/' }
func isCodeChar(c byte) bool  { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' }
func isLowerHex(c byte) bool  { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }
func isHex(c byte) bool       { return isLowerHex(c) || 'A' <= c && c <= 'F' }
func isBase64(c byte) bool {
	return isAlnum(c) || c == '+' || c == '/' || c == '-' || c == '_' || c == '='
}

func isDigest(s string) bool { return matchSet(s, 64, 64, isLowerHex) }

// isToken reports whether s is printable ASCII without spaces.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// isText reports whether s is valid UTF-8 without control characters.
func isText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// looksBinary reports whether s holds a run of hex digits or base64
// characters long enough to encode 16 (hex) or 32 (base64) bytes.
func looksBinary(s string) bool {
	hexRun, b64Run := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isHex(c) {
			hexRun++
		} else {
			hexRun = 0
		}
		if isBase64(c) {
			b64Run++
		} else {
			b64Run = 0
		}
		if hexRun > maxHexRun || b64Run > maxBase64Run {
			return true
		}
	}
	return false
}
