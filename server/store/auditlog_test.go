package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/cml-project/cml/server/audit"
)

func entry(reqID string) audit.Entry {
	return audit.Entry{
		RequestID:     reqID,
		Caller:        "spiffe://example.org/ns/ml/sa/loader",
		Operation:     "ReleaseKey",
		KeyID:         "k",
		KeyVersion:    1,
		PolicyVersion: 1,
		Decision:      audit.Allow,
		QuoteDigest:   audit.Digest([]byte(reqID)),
		Measurements:  map[string]string{"mrtd": strings.Repeat("ab", 48)},
	}
}

func TestAuditAppendList(t *testing.T) {
	e := newEnv(t)
	s := e.s
	var recs []audit.Record
	for i := range 10 {
		en := entry(fmt.Sprintf("req-%d", i))
		if i%3 == 0 {
			en.Decision = audit.Deny
			en.Reasons = []string{"mrtd_not_allowed"}
		}
		if i%2 == 0 {
			en.KeyID = "other"
		}
		r, err := s.AppendAudit(ctx, en)
		if err != nil {
			t.Fatal(err)
		}
		if r.Seq != uint64(i+1) {
			t.Fatalf("seq %d, want %d", r.Seq, i+1)
		}
		if i > 0 && r.PrevHash != recs[i-1].Hash {
			t.Fatal("prev hash not linked")
		}
		recs = append(recs, r)
	}
	// Time comes from the injected clock: t0 is the creation, then +1s per call.
	if !recs[0].Time.Equal(t0.Add(1e9)) || !recs[9].Time.Equal(t0.Add(10e9)) {
		t.Fatalf("times %v … %v", recs[0].Time, recs[9].Time)
	}
	all, err := s.ListAudit(ctx, audit.Filter{})
	if err != nil || len(all) != 10 {
		t.Fatalf("ListAudit: %d %v", len(all), err)
	}
	for i := range all {
		if all[i].Hash != recs[i].Hash || all[i].RequestID != recs[i].RequestID {
			t.Fatalf("record %d differs from the one appended", i)
		}
	}
	count := func(f audit.Filter) int {
		t.Helper()
		got, err := s.ListAudit(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range got {
			if !f.Match(&r) {
				t.Fatalf("record %d does not match %+v", r.Seq, f)
			}
		}
		return len(got)
	}
	if n := count(audit.Filter{Decision: audit.Deny}); n != 4 {
		t.Errorf("deny: %d", n)
	}
	if n := count(audit.Filter{KeyID: "other"}); n != 5 {
		t.Errorf("key other: %d", n)
	}
	if n := count(audit.Filter{Since: recs[2].Time, Until: recs[5].Time}); n != 3 {
		t.Errorf("time range: %d", n)
	}
	if n := count(audit.Filter{KeyID: "other", Decision: audit.Deny}); n != 2 {
		t.Errorf("other+deny: %d", n)
	}
	// Pagination.
	var seqs []uint64
	for after := uint64(0); ; {
		page, err := s.ListAudit(ctx, audit.Filter{AfterSeq: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			seqs = append(seqs, r.Seq)
		}
		after = page[len(page)-1].Seq
	}
	if fmt.Sprint(seqs) != "[1 2 3 4 5 6 7 8 9 10]" {
		t.Fatalf("paged seqs %v", seqs)
	}
	rep, err := s.VerifyAudit(ctx)
	if err != nil || rep.Records != 10 || rep.Head != recs[9].Head() {
		t.Fatalf("VerifyAudit: %+v %v", rep, err)
	}
	// The chain continues across a reopen.
	if err := e.reopen(t); err != nil {
		t.Fatal(err)
	}
	r, err := e.s.AppendAudit(ctx, entry("after-reopen"))
	if err != nil || r.Seq != 11 || r.PrevHash != recs[9].Hash {
		t.Fatalf("append after reopen: %+v %v", r, err)
	}
	if _, err := e.s.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestAuditRefusesSecrets(t *testing.T) {
	s := newEnv(t).s
	en := entry("r")
	en.Details = map[string]string{"dek": "0123456789abcdef0123456789abcdef0123456789abcdef"}
	if _, err := s.AppendAudit(ctx, en); !errors.Is(err, audit.ErrInvalid) {
		t.Fatalf("hex in details: %v", err)
	}
	en = entry("r")
	en.NonceDigest = "nonce-in-clear"
	if _, err := s.AppendAudit(ctx, en); !errors.Is(err, audit.ErrInvalid) {
		t.Fatalf("nonce in clear: %v", err)
	}
	if recs, _ := s.ListAudit(ctx, audit.Filter{}); len(recs) != 0 {
		t.Fatal("refused entry was stored")
	}
}

// TestAuditTamper edits the raw audit bucket and checks VerifyAudit names
// the first bad sequence number and the kind of damage.
func TestAuditTamper(t *testing.T) {
	rewrite := func(tx *bolt.Tx, seq uint64, mut func(*audit.Record)) error {
		b := tx.Bucket(bucketAudit)
		r, err := audit.Decode(b.Get(seqKey(seq)))
		if err != nil {
			return err
		}
		mut(&r)
		raw, err := r.Encode()
		if err != nil {
			return err
		}
		return b.Put(seqKey(seq), raw)
	}
	cases := []struct {
		name    string
		tamper  func(tx *bolt.Tx) error
		wantErr error
		wantSeq uint64
		openErr bool // Check at Open also notices (the damage reaches the last record)
	}{
		{"modified", func(tx *bolt.Tx) error {
			return rewrite(tx, 3, func(r *audit.Record) { r.Decision = audit.Allow; r.Reasons = nil })
		}, audit.ErrModified, 3, false},
		{"bytes flipped", func(tx *bolt.Tx) error {
			v := clone(tx.Bucket(bucketAudit).Get(seqKey(2)))
			v[len(v)-1] ^= 0xff
			return tx.Bucket(bucketAudit).Put(seqKey(2), v)
		}, audit.ErrMalformed, 2, false},
		{"reordered", func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketAudit)
			v3, v4 := clone(b.Get(seqKey(3))), clone(b.Get(seqKey(4)))
			return errors.Join(b.Put(seqKey(3), v4), b.Put(seqKey(4), v3))
		}, audit.ErrReordered, 3, false},
		{"deleted middle", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketAudit).Delete(seqKey(3))
		}, audit.ErrGap, 3, false},
		{"deleted first", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketAudit).Delete(seqKey(1))
		}, audit.ErrGap, 1, false},
		{"bad genesis", func(tx *bolt.Tx) error {
			return rewrite(tx, 1, func(r *audit.Record) { r.PrevHash[0] = 1 })
		}, audit.ErrBadGenesis, 1, false},
		{"deleted last", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketAudit).Delete(seqKey(5))
		}, audit.ErrTruncated, 5, true},
		{"appended without head", func(tx *bolt.Tx) error {
			r, _ := audit.Decode(tx.Bucket(bucketAudit).Get(seqKey(5)))
			_, raw, err := audit.NewRecord(r.Head(), t0, entry("forged"))
			if err != nil {
				return err
			}
			return tx.Bucket(bucketAudit).Put(seqKey(6), raw)
		}, audit.ErrBeyondHead, 6, true},
		{"whole chain rewritten, head unauthenticated", func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketAudit)
			var h audit.Head
			for seq := uint64(1); seq <= 5; seq++ {
				r, _ := audit.Decode(b.Get(seqKey(seq)))
				r.Decision = audit.Allow
				r.Reasons = nil
				nr, raw, err := audit.NewRecord(h, r.Time, r.Entry)
				if err != nil {
					return err
				}
				if err := b.Put(seqKey(seq), raw); err != nil {
					return err
				}
				h = nr.Head()
			}
			// The forger writes a head without the MAC key.
			return tx.Bucket(bucketMeta).Put(metaAuditHead, encodeHead(make([]byte, 32), h))
		}, audit.ErrModified, 5, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			for i := range 5 {
				en := entry(fmt.Sprintf("req-%d", i))
				en.Decision = audit.Deny
				en.Reasons = []string{"debug_td"}
				if _, err := e.s.AppendAudit(ctx, en); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.s.VerifyAudit(ctx); err != nil {
				t.Fatal(err)
			}
			e.raw(t, tc.tamper)
			_, err := e.s.VerifyAudit(ctx)
			var ce *audit.ChainError
			if !errors.As(err, &ce) || !errors.Is(err, tc.wantErr) || ce.Seq != tc.wantSeq {
				t.Fatalf("VerifyAudit = %v; want %v at seq %d", err, tc.wantErr, tc.wantSeq)
			}
			err = e.reopen(t)
			if tc.openErr != (err != nil) {
				t.Fatalf("Open after tampering: %v (want error: %v)", err, tc.openErr)
			}
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open error %v does not wrap ErrCorrupt", err)
			}
		})
	}
}
