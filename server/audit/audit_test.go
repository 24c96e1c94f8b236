package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

func fullEntry() Entry {
	return Entry{
		RequestID:     "req-0001",
		Caller:        "spiffe://example.org/ns/ml/sa/loader",
		Operation:     "ReleaseKey",
		KeyID:         "llama-3-8b",
		KeyVersion:    2,
		PolicyVersion: 7,
		Decision:      Deny,
		Reasons:       []string{"mrtd_not_allowed", "debug_td"},
		QuoteDigest:   Digest([]byte("quote")),
		NonceDigest:   Digest([]byte("nonce")),
		Measurements:  map[string]string{"rtmr0": "00ff", "mrtd": strings.Repeat("ab", 48)},
		Simulated:     true,
		Details:       map[string]string{"tcb_status": "UpToDate", "note": "policy v7"},
	}
}

// TestEncodingVector builds the format-1 bytes by hand from the spec in
// doc.go and checks Encode produces exactly them.
func TestEncodingVector(t *testing.T) {
	prev := Hash{1, 2, 3}
	r := Record{Seq: 5, Time: t0, PrevHash: prev, Entry: Entry{
		RequestID: "r", Operation: "Op", Decision: Allow,
		Reasons:      []string{"ok"},
		Measurements: map[string]string{"z": "01", "a": "02"},
	}}
	var w []byte
	str := func(s string) { w = binary.BigEndian.AppendUint32(w, uint32(len(s))); w = append(w, s...) }
	w = append(w, "CMLAUDIT"...)
	w = append(w, 1)
	w = binary.BigEndian.AppendUint64(w, 5)
	w = binary.BigEndian.AppendUint64(w, uint64(t0.UnixNano()))
	w = append(w, prev[:]...)
	str("r")
	str("")
	str("Op")
	str("")
	w = binary.BigEndian.AppendUint32(w, 0)
	w = binary.BigEndian.AppendUint32(w, 0)
	w = append(w, 1)
	w = binary.BigEndian.AppendUint32(w, 1)
	str("ok")
	str("")
	str("")
	w = binary.BigEndian.AppendUint32(w, 2)
	str("a")
	str("02")
	str("z")
	str("01")
	w = append(w, 0)
	w = binary.BigEndian.AppendUint32(w, 0)

	got, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, w) {
		t.Fatalf("Encode =\n%x\nwant\n%x", got, w)
	}
	dec, err := Decode(got)
	if err != nil {
		t.Fatal(err)
	}
	if dec.Hash != sha256.Sum256(w) {
		t.Fatal("hash is not SHA-256 of the encoding")
	}
	// Pinned: changing the encoding changes every stored chain.
	const want = "e31ce2c88d3b242d7da21b5dfdf7077a24fabf975f36f366e837ad5cbc105091" // computed independently from the spec
	if got := dec.Hash.String(); got != want {
		t.Fatalf("hash of vector = %s, want %s", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	r, raw, err := NewRecord(Head{Seq: 41, Hash: Hash{9}}, t0, fullEntry())
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 42 || r.PrevHash != (Hash{9}) || !r.Time.Equal(t0) {
		t.Fatalf("chain fields: %+v", r)
	}
	if r.Hash != sha256.Sum256(raw) {
		t.Fatal("hash mismatch")
	}
	d, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d, r) {
		t.Fatalf("decode(encode(r)) != r:\n%+v\n%+v", d, r)
	}
	want := fullEntry()
	if !reflect.DeepEqual(d.Entry, want) {
		t.Fatalf("entry changed:\n%+v\n%+v", d.Entry, want)
	}
	again, _ := d.Encode()
	if !bytes.Equal(again, raw) {
		t.Fatal("encoding not canonical")
	}
	// The time zone and monotonic clock do not affect the encoding.
	r2, raw2, _ := NewRecord(Head{Seq: 41, Hash: Hash{9}}, t0.In(time.FixedZone("x", 3600)), fullEntry())
	if !bytes.Equal(raw2, raw) || r2.Time.Location() != time.UTC {
		t.Fatal("time zone changed the encoding")
	}
	// Any change of any field changes the hash.
	e := fullEntry()
	e.Simulated = false
	r3, _, _ := NewRecord(Head{Seq: 41, Hash: Hash{9}}, t0, e)
	if r3.Hash == r.Hash {
		t.Fatal("simulated flag not covered by hash")
	}
}

func TestValidateRefuses(t *testing.T) {
	key := sha256.Sum256([]byte("a key"))
	cases := map[string]func(*Entry){
		"no decision":          func(e *Entry) { e.Decision = "" },
		"bad decision":         func(e *Entry) { e.Decision = "maybe" },
		"no operation":         func(e *Entry) { e.Operation = "" },
		"space in op":          func(e *Entry) { e.Operation = "Release Key" },
		"bad key id":           func(e *Entry) { e.KeyID = "a/b" },
		"long key id":          func(e *Entry) { e.KeyID = strings.Repeat("k", 129) },
		"caller not spiffe":    func(e *Entry) { e.Caller = "https://x" },
		"caller control":       func(e *Entry) { e.Caller = "spiffe://x/\n" },
		"request id space":     func(e *Entry) { e.RequestID = "a b" },
		"reason upper":         func(e *Entry) { e.Reasons = []string{"Bad"} },
		"reason empty":         func(e *Entry) { e.Reasons = []string{""} },
		"too many reasons":     func(e *Entry) { e.Reasons = make([]string, 33) },
		"quote digest upper":   func(e *Entry) { e.QuoteDigest = strings.ToUpper(Digest(nil)) },
		"quote digest short":   func(e *Entry) { e.QuoteDigest = "abcd" },
		"raw nonce":            func(e *Entry) { e.NonceDigest = string(key[:]) },
		"measurement odd":      func(e *Entry) { e.Measurements = map[string]string{"mrtd": "abc"} },
		"measurement not hex":  func(e *Entry) { e.Measurements = map[string]string{"mrtd": "zz"} },
		"measurement empty":    func(e *Entry) { e.Measurements = map[string]string{"mrtd": ""} },
		"measurement too long": func(e *Entry) { e.Measurements = map[string]string{"mrtd": strings.Repeat("00", 65)} },
		"measurement name":     func(e *Entry) { e.Measurements = map[string]string{"MRTD": "00"} },
		"detail raw bytes":     func(e *Entry) { e.Details = map[string]string{"k": string(key[:])} },
		"detail hex key":       func(e *Entry) { e.Details = map[string]string{"k": "key=" + hex.EncodeToString(key[:])} },
		"detail hex 16 bytes":  func(e *Entry) { e.Details = map[string]string{"k": hex.EncodeToString(key[:16])} },
		"detail base64 key":    func(e *Entry) { e.Details = map[string]string{"k": "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo="} },
		"detail newline":       func(e *Entry) { e.Details = map[string]string{"k": "a\nb"} },
		"detail long":          func(e *Entry) { e.Details = map[string]string{"k": strings.Repeat("a ", 200)} },
		"detail bad utf8":      func(e *Entry) { e.Details = map[string]string{"k": "\xff"} },
		"detail name":          func(e *Entry) { e.Details = map[string]string{"K k": "v"} },
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			e := fullEntry()
			mut(&e)
			err := e.Validate()
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
			if strings.Contains(err.Error(), string(key[:])) || strings.Contains(err.Error(), hex.EncodeToString(key[:])[:32]) {
				t.Fatalf("error echoes the value: %v", err)
			}
			if _, _, err := NewRecord(Head{}, t0, e); !errors.Is(err, ErrInvalid) {
				t.Fatalf("NewRecord accepted: %v", err)
			}
		})
	}
	ok := fullEntry()
	ok.Details = map[string]string{"msg": "quote verified; TCB status OutOfDate, SVN 3 < 5 (see https://example.org/x)"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("ordinary detail refused: %v", err)
	}
}

func TestRecordFieldChecks(t *testing.T) {
	e := fullEntry()
	for name, r := range map[string]Record{
		"zero seq":  {Seq: 0, Time: t0, Entry: e},
		"zero time": {Seq: 1, Entry: e},
		"far time":  {Seq: 1, Time: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), Entry: e},
	} {
		if _, err := r.Encode(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Encode = %v", name, err)
		}
	}
}

func TestDecodeRejectsNonCanonical(t *testing.T) {
	_, raw, err := NewRecord(Head{}, t0, fullEntry())
	if err != nil {
		t.Fatal(err)
	}
	// Every truncation fails.
	for n := 0; n < len(raw); n++ {
		if _, err := Decode(raw[:n]); err == nil {
			t.Fatalf("Decode of %d/%d bytes succeeded", n, len(raw))
		}
	}
	if _, err := Decode(append(bytes.Clone(raw), 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	// Map out of order: swap the two measurement entries by re-encoding manually.
	e := Entry{Operation: "x", Decision: Allow}
	r := Record{Seq: 1, Time: t0, Entry: e}
	base, _ := r.Encode()
	// Replace the empty measurements map, simulated byte and details map
	// (the last 4+1+4 bytes) with an unsorted map and the same tail.
	unsorted := bytes.Clone(base[:len(base)-(4+1+4)])
	unsorted = binary.BigEndian.AppendUint32(unsorted, 2)
	for _, kv := range [][2]string{{"b", "00"}, {"a", "00"}} {
		for _, s := range kv {
			unsorted = binary.BigEndian.AppendUint32(unsorted, uint32(len(s)))
			unsorted = append(unsorted, s...)
		}
	}
	unsorted = append(unsorted, 0, 0, 0, 0, 0)
	if _, err := Decode(unsorted); err == nil || !strings.Contains(err.Error(), "ascending") {
		t.Fatalf("unsorted map: %v", err)
	}
	// Duplicate names are also not strictly ascending.
	dup := bytes.Replace(unsorted, []byte{0, 0, 0, 1, 'b'}, []byte{0, 0, 0, 1, 'a'}, 1)
	if _, err := Decode(dup); err == nil {
		t.Fatal("duplicate map name accepted")
	}
	// Bad simulated byte.
	bad := bytes.Clone(base)
	bad[len(base)-5] = 2
	if _, err := Decode(bad); err == nil {
		t.Fatal("simulated=2 accepted")
	}
	// Bad magic and format.
	bad = bytes.Clone(base)
	bad[0] = 'X'
	if _, err := Decode(bad); err == nil {
		t.Fatal("bad magic accepted")
	}
	bad = bytes.Clone(base)
	bad[8] = 2
	if _, err := Decode(bad); err == nil || !strings.Contains(err.Error(), "format 2") {
		t.Fatalf("format 2: %v", err)
	}
	// Huge length fields do not allocate or panic.
	bad = bytes.Clone(base[:9+8+8+32])
	bad = append(bad, 0xff, 0xff, 0xff, 0xff)
	if _, err := Decode(bad); err == nil {
		t.Fatal("huge string length accepted")
	}
}

// chain builds n records and returns their encodings.
func chain(t *testing.T, n int) [][]byte {
	t.Helper()
	var out [][]byte
	h := Head{}
	for i := range n {
		e := fullEntry()
		e.RequestID = "req-" + string(rune('a'+i))
		r, raw, err := NewRecord(h, t0.Add(time.Duration(i)*time.Second), e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, raw)
		h = r.Head()
	}
	return out
}

func headOf(t *testing.T, raw []byte) Head {
	r, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return r.Head()
}

func verify(t *testing.T, seqs []uint64, raws [][]byte, head Head) (Report, error) {
	v := NewVerifier()
	for i, raw := range raws {
		if err := v.Add(seqs[i], raw); err != nil {
			return Report{}, err
		}
	}
	return v.Finish(head)
}

func TestVerifier(t *testing.T) {
	raws := chain(t, 5)
	seqs := []uint64{1, 2, 3, 4, 5}
	head := headOf(t, raws[4])

	rep, err := verify(t, seqs, raws, head)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 5 || rep.Head != head || !rep.First.Equal(t0) || !rep.Last.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("report %+v", rep)
	}
	if rep, err := verify(t, nil, nil, Head{}); err != nil || rep.Records != 0 {
		t.Fatalf("empty chain: %+v %v", rep, err)
	}

	// Record 3 re-encoded with another field (a valid record, wrong hash).
	r3, _ := Decode(raws[2])
	r3.Decision = Allow
	mod3, _ := r3.Encode()
	// Record 1 with a non-zero prev hash.
	r1, _ := Decode(raws[0])
	r1.PrevHash = Hash{1}
	badGen, _ := r1.Encode()

	cases := []struct {
		name    string
		seqs    []uint64
		raws    [][]byte
		head    Head
		wantErr error
		wantSeq uint64
	}{
		{"modified middle", seqs, [][]byte{raws[0], raws[1], mod3, raws[3], raws[4]}, head, ErrModified, 3},
		{"modified last", seqs, [][]byte{raws[0], raws[1], raws[2], raws[3], func() []byte { r, _ := Decode(raws[4]); r.Reasons = nil; b, _ := r.Encode(); return b }()}, head, ErrModified, 5},
		{"corrupt bytes", seqs, [][]byte{raws[0], raws[1], append([]byte("X"), raws[2][1:]...), raws[3], raws[4]}, head, ErrMalformed, 3},
		{"swapped values", seqs, [][]byte{raws[0], raws[1], raws[3], raws[2], raws[4]}, head, ErrReordered, 3},
		{"deleted middle", []uint64{1, 2, 4, 5}, [][]byte{raws[0], raws[1], raws[3], raws[4]}, head, ErrGap, 3},
		{"deleted first", []uint64{2, 3, 4, 5}, raws[1:], head, ErrGap, 1},
		{"deleted last", seqs[:4], raws[:4], head, ErrTruncated, 5},
		{"deleted all", nil, nil, head, ErrTruncated, 1},
		{"bad genesis", seqs, [][]byte{badGen, raws[1], raws[2], raws[3], raws[4]}, head, ErrBadGenesis, 1},
		{"beyond head", seqs, raws, headOf(t, raws[3]), ErrBeyondHead, 5},
		{"rewritten chain", seqs, chain(t, 5)[:5], Head{Seq: 5, Hash: Hash{7}}, ErrModified, 5},
		{"out of order keys", []uint64{1, 2, 2}, raws[:3], head, ErrReordered, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verify(t, tc.seqs, tc.raws, tc.head)
			var ce *ChainError
			if !errors.As(err, &ce) || !errors.Is(err, tc.wantErr) || ce.Seq != tc.wantSeq {
				t.Fatalf("err = %v, want %v at seq %d", err, tc.wantErr, tc.wantSeq)
			}
		})
	}
}

func TestFilter(t *testing.T) {
	r, _, _ := NewRecord(Head{Seq: 9}, t0, fullEntry())
	yes := []Filter{{}, {KeyID: "llama-3-8b"}, {Decision: Deny}, {Since: t0}, {Until: t0.Add(1)}, {AfterSeq: 9}}
	no := []Filter{{KeyID: "other"}, {Decision: Allow}, {Since: t0.Add(1)}, {Until: t0}, {AfterSeq: 10}}
	for _, f := range yes {
		if !f.Match(&r) {
			t.Errorf("%+v does not match", f)
		}
	}
	for _, f := range no {
		if f.Match(&r) {
			t.Errorf("%+v matches", f)
		}
	}
}

func FuzzDecode(f *testing.F) {
	_, raw, _ := NewRecord(Head{Seq: 3, Hash: Hash{1}}, t0, fullEntry())
	f.Add(raw)
	_, raw, _ = NewRecord(Head{}, t0, Entry{Operation: "x", Decision: Allow})
	f.Add(raw)
	f.Add([]byte("CMLAUDIT\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			return
		}
		if err := r.Entry.Validate(); err != nil {
			t.Fatalf("decoded record fails validation: %v", err)
		}
		again, err := r.Encode()
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("Decode accepted a non-canonical encoding")
		}
		if r.Hash != sha256.Sum256(b) {
			t.Fatal("hash mismatch")
		}
	})
}
