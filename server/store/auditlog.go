package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/cml-project/cml/server/audit"
)

// headZero is the head of an empty audit chain.
var headZero = audit.Head{}

const headLabel = "cml/v1/audit-head"

// encodeHead is the stored audit head: u64 seq ‖ hash(32) ‖
// HMAC-SHA256(macKey, "cml/v1/audit-head" ‖ u64 seq ‖ hash)(32).
func encodeHead(macKey []byte, h audit.Head) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 72), h.Seq)
	b = append(b, h.Hash[:]...)
	return append(b, headMAC(macKey, b)...)
}

func headMAC(macKey, seqHash []byte) []byte {
	m := hmac.New(sha256.New, macKey)
	m.Write([]byte(headLabel))
	m.Write(seqHash)
	return m.Sum(nil)
}

// decodeHead parses and authenticates a stored head.
func decodeHead(macKey, v []byte) (audit.Head, error) {
	if len(v) != 72 {
		return audit.Head{}, fmt.Errorf("%w: audit head is %d bytes, want 72", ErrCorrupt, len(v))
	}
	var h audit.Head
	h.Seq = binary.BigEndian.Uint64(v)
	copy(h.Hash[:], v[8:40])
	if !hmac.Equal(headMAC(macKey, v[:40]), v[40:]) {
		return audit.Head{}, &audit.ChainError{Seq: h.Seq, Err: audit.ErrModified,
			Detail: "the authenticated audit head does not verify: head or chain rewritten"}
	}
	return h, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// AppendAudit appends e to the audit chain and returns the record written.
// Sequence number, time and previous hash are assigned inside the write
// transaction, so concurrent appends form one chain; appends share commits
// with other writes. An entry that fails audit.Entry.Validate is refused
// with an error wrapping audit.ErrInvalid.
func (s *Store) AppendAudit(ctx context.Context, e audit.Entry) (audit.Record, error) {
	if err := e.Validate(); err != nil {
		return audit.Record{}, err
	}
	var out audit.Record
	err := s.batch(ctx, func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		// The head was authenticated at Open and only this function writes
		// it; decoding without the MAC check keeps appends cheap.
		v := m.Get(metaAuditHead)
		if len(v) != 72 {
			return fmt.Errorf("%w: audit head missing", ErrCorrupt)
		}
		prev := audit.Head{Seq: binary.BigEndian.Uint64(v)}
		copy(prev.Hash[:], v[8:40])
		rec, raw, err := audit.NewRecord(prev, s.timestamp(), e)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketAudit).Put(seqKey(rec.Seq), raw); err != nil {
			return err
		}
		if err := m.Put(metaAuditHead, encodeHead(s.macKey, rec.Head())); err != nil {
			return err
		}
		out = rec
		return nil
	})
	if err != nil {
		return audit.Record{}, err
	}
	return out, nil
}

// ListAudit returns up to f.Limit records (DefaultListLimit if ≤ 0, at most
// MaxListLimit) matching f, in sequence order, starting after f.AfterSeq.
// For the next page pass the last returned Seq as AfterSeq. Filters scan the
// chain from AfterSeq.
func (s *Store) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	limit := listLimit(f.Limit)
	var out []audit.Record
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		c := tx.Bucket(bucketAudit).Cursor()
		n := 0
		for k, v := c.Seek(seqKey(f.AfterSeq + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("store: %w", err)
				}
			}
			r, err := audit.Decode(v) // copies out of bbolt memory
			if err != nil {
				return fmt.Errorf("%w: audit record at key %x: %v", ErrCorrupt, k, err)
			}
			if f.Match(&r) {
				out = append(out, r)
			}
		}
		return nil
	})
	return out, err
}

// VerifyAudit walks the whole audit chain and checks it against the
// authenticated head. It returns the report, or an error wrapping a
// *audit.ChainError that names the first bad sequence number and why.
func (s *Store) VerifyAudit(ctx context.Context) (audit.Report, error) {
	var rep audit.Report
	err := s.view(ctx, func(tx *bolt.Tx) error {
		head, err := decodeHead(s.macKey, tx.Bucket(bucketMeta).Get(metaAuditHead))
		if err != nil {
			return err
		}
		v := audit.NewVerifier()
		c := tx.Bucket(bucketAudit).Cursor()
		n := 0
		for k, raw := c.First(); k != nil; k, raw = c.Next() {
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("store: %w", err)
				}
			}
			if len(k) != 8 {
				return &audit.ChainError{Err: audit.ErrMalformed, Detail: fmt.Sprintf("bucket key of %d bytes", len(k))}
			}
			if err := v.Add(binary.BigEndian.Uint64(k), raw); err != nil {
				return err
			}
		}
		rep, err = v.Finish(head)
		return err
	})
	if err != nil {
		return audit.Report{}, err
	}
	return rep, nil
}
