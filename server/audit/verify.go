package audit

import (
	"errors"
	"fmt"
	"time"
)

// The ways a chain can be broken. A *ChainError wraps exactly one.
var (
	ErrMalformed  = errors.New("malformed record")
	ErrBadGenesis = errors.New("bad genesis")
	ErrGap        = errors.New("records deleted")
	ErrReordered  = errors.New("records reordered")
	ErrModified   = errors.New("record modified")
	ErrTruncated  = errors.New("records deleted at the end")
	ErrBeyondHead = errors.New("records beyond the authenticated head")
)

// ChainError reports the first bad sequence number of a chain and why.
type ChainError struct {
	Seq    uint64 // first sequence number found bad
	Err    error  // one of ErrMalformed … ErrBeyondHead
	Detail string // what was seen, without record contents
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit: chain broken at seq %d: %v: %s", e.Seq, e.Err, e.Detail)
}

func (e *ChainError) Unwrap() error { return e.Err }

// Report is the result of a successful verification.
type Report struct {
	Records uint64 // records walked
	Head    Head   // the last record's seq and hash
	First   time.Time
	Last    time.Time
}

// Verifier walks a chain one stored record at a time, in storage order.
// The zero value is not ready; use NewVerifier.
type Verifier struct {
	head  Head
	rep   Report
	added bool
}

// NewVerifier returns a verifier for a chain that starts at seq 1.
func NewVerifier() *Verifier { return &Verifier{} }

// Add checks the next stored record: storedSeq is the sequence number it is
// stored under (the bucket key), raw its encoding. It returns a *ChainError
// at the first problem; after one, the verifier must not be used again.
func (v *Verifier) Add(storedSeq uint64, raw []byte) error {
	r, err := Decode(raw)
	if err != nil {
		return &ChainError{Seq: storedSeq, Err: ErrMalformed, Detail: err.Error()}
	}
	want := v.head.Seq + 1
	switch {
	case r.Seq != storedSeq:
		return &ChainError{Seq: storedSeq, Err: ErrReordered,
			Detail: fmt.Sprintf("record stored at seq %d says seq %d", storedSeq, r.Seq)}
	case storedSeq < want:
		return &ChainError{Seq: storedSeq, Err: ErrReordered,
			Detail: fmt.Sprintf("seq %d follows seq %d", storedSeq, v.head.Seq)}
	case storedSeq > want:
		return &ChainError{Seq: want, Err: ErrGap,
			Detail: fmt.Sprintf("seq %d to %d missing", want, storedSeq-1)}
	case r.Seq == 1 && r.PrevHash != (Hash{}):
		return &ChainError{Seq: 1, Err: ErrBadGenesis,
			Detail: "first record's prev_hash is not zero"}
	case r.Seq > 1 && r.PrevHash != v.head.Hash:
		return &ChainError{Seq: v.head.Seq, Err: ErrModified,
			Detail: fmt.Sprintf("hash of record %d does not match prev_hash of record %d; one of them was changed", v.head.Seq, r.Seq)}
	}
	v.head = r.Head()
	if !v.added {
		v.rep.First = r.Time
		v.added = true
	}
	v.rep.Last = r.Time
	v.rep.Records++
	return nil
}

// Finish compares the walked chain with want, the authenticated head kept
// beside it (the zero Head for an empty chain), and returns the report.
func (v *Verifier) Finish(want Head) (Report, error) {
	got := v.head
	switch {
	case got.Seq < want.Seq:
		return Report{}, &ChainError{Seq: got.Seq + 1, Err: ErrTruncated,
			Detail: fmt.Sprintf("chain ends at seq %d, head says %d", got.Seq, want.Seq)}
	case got.Seq > want.Seq:
		return Report{}, &ChainError{Seq: want.Seq + 1, Err: ErrBeyondHead,
			Detail: fmt.Sprintf("chain ends at seq %d, head says %d", got.Seq, want.Seq)}
	case got.Hash != want.Hash:
		return Report{}, &ChainError{Seq: got.Seq, Err: ErrModified,
			Detail: fmt.Sprintf("hash of record %d does not match the authenticated head", got.Seq)}
	}
	v.rep.Head = got
	return v.rep, nil
}

// Filter selects records for listing. Zero fields do not filter.
type Filter struct {
	KeyID    string
	Decision Decision
	Since    time.Time // inclusive
	Until    time.Time // exclusive
	AfterSeq uint64    // pagination: only records with Seq > AfterSeq
	Limit    int       // at most this many records; ≤0 means the lister's default
}

// Match reports whether r passes every set field of f other than Limit.
func (f *Filter) Match(r *Record) bool {
	return r.Seq > f.AfterSeq &&
		(f.KeyID == "" || r.KeyID == f.KeyID) &&
		(f.Decision == "" || r.Decision == f.Decision) &&
		(f.Since.IsZero() || !r.Time.Before(f.Since)) &&
		(f.Until.IsZero() || r.Time.Before(f.Until))
}
