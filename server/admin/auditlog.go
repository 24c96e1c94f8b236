package admin

import (
	"context"
	"errors"
	"strconv"

	"google.golang.org/protobuf/types/known/timestamppb"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/rpcstatus"
)

// ListAuditRecords returns one page of audit records in sequence order.
// The call itself is audited after the page is read, so a page never
// contains the record of its own request.
func (s *Service) ListAuditRecords(ctx context.Context, req *kbsv1.ListAuditRecordsRequest) (*kbsv1.ListAuditRecordsResponse, error) {
	var out *kbsv1.ListAuditRecordsResponse
	// The record of a listing does not name the filter's key as its key:
	// reading the log is not an operation on the key, and the listing of a
	// key's records would otherwise grow with every page read.
	err := s.call(ctx, "ListAuditRecords", "", func(e *audit.Entry) error {
		n, err := pageSize(req.GetPageSize())
		if err != nil {
			return err
		}
		f := audit.Filter{KeyID: req.GetKeyId(), Limit: n}
		if req.GetKeyId() != "" {
			if err := validKeyID(req.GetKeyId()); err != nil {
				return err
			}
			e.Details = map[string]string{"filter_key_id": req.GetKeyId()}
		}
		switch req.GetDecision() {
		case kbsv1.Decision_DECISION_UNSPECIFIED:
		case kbsv1.Decision_DECISION_ALLOW:
			f.Decision = audit.Allow
		case kbsv1.Decision_DECISION_DENY:
			f.Decision = audit.Deny
		default:
			return rpcstatus.Invalid("decision: %d is not a decision", req.GetDecision())
		}
		if t := req.GetStartTime(); t != nil {
			if err := t.CheckValid(); err != nil {
				return rpcstatus.Invalid("start_time: %v", err)
			}
			f.Since = t.AsTime()
		}
		if t := req.GetEndTime(); t != nil {
			if err := t.CheckValid(); err != nil {
				return rpcstatus.Invalid("end_time: %v", err)
			}
			f.Until = t.AsTime()
		}
		pos, err := decodeToken(req.GetPageToken(), "a")
		if err != nil {
			return err
		}
		if pos != "" {
			if f.AfterSeq, err = strconv.ParseUint(pos, 10, 64); err != nil {
				return rpcstatus.Invalid("page_token: not a token this server issued")
			}
		}
		recs, err := s.cfg.Store.ListAudit(ctx, f)
		if err != nil {
			return err
		}
		out = &kbsv1.ListAuditRecordsResponse{}
		for i := range recs {
			out.Records = append(out.Records, recordProto(&recs[i]))
		}
		if len(recs) == n {
			probe := f
			probe.AfterSeq, probe.Limit = recs[len(recs)-1].Seq, 1
			more, err := s.cfg.Store.ListAudit(ctx, probe)
			if err != nil {
				return err
			}
			if len(more) > 0 {
				out.NextPageToken = encodeToken("a", strconv.FormatUint(recs[len(recs)-1].Seq, 10))
			}
		}
		return nil
	})
	return out, err
}

// VerifyAuditLog walks the chain; a broken chain is a response, not an
// error.
func (s *Service) VerifyAuditLog(ctx context.Context, _ *kbsv1.VerifyAuditLogRequest) (*kbsv1.VerifyAuditLogResponse, error) {
	var out *kbsv1.VerifyAuditLogResponse
	err := s.call(ctx, "VerifyAuditLog", "", func(e *audit.Entry) error {
		rep, err := s.cfg.Store.VerifyAudit(ctx)
		if ce, ok := errors.AsType[*audit.ChainError](err); ok {
			out = &kbsv1.VerifyAuditLogResponse{
				Ok:               false,
				RecordsChecked:   checkedBefore(rep.Records, ce.Seq),
				FirstBadSequence: ce.Seq,
				Failure:          chainFailure(ce.Err),
				Detail:           ce.Detail,
			}
			e.Details = map[string]string{"result": "broken", "failure": out.Failure}
			return nil
		}
		if err != nil {
			return err
		}
		out = &kbsv1.VerifyAuditLogResponse{
			Ok:             true,
			RecordsChecked: rep.Records,
			HeadSequence:   rep.Head.Seq,
		}
		if rep.Records > 0 {
			out.HeadHash = rep.Head.Hash.String()
			out.FirstTime = timestamppb.New(rep.First)
			out.LastTime = timestamppb.New(rep.Last)
		}
		e.Details = map[string]string{"result": "ok", "records": strconv.FormatUint(rep.Records, 10)}
		return nil
	})
	return out, err
}

// checkedBefore is the number of records walked before the first bad one.
func checkedBefore(walked, bad uint64) uint64 {
	if walked == 0 && bad > 0 {
		return bad - 1
	}
	return walked
}

func chainFailure(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{audit.ErrMalformed, "malformed"},
		{audit.ErrBadGenesis, "bad_genesis"},
		{audit.ErrGap, "gap"},
		{audit.ErrReordered, "reordered"},
		{audit.ErrModified, "modified"},
		{audit.ErrTruncated, "truncated"},
		{audit.ErrBeyondHead, "beyond_head"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return "malformed"
}

func recordProto(r *audit.Record) *kbsv1.AuditRecord {
	d := kbsv1.Decision_DECISION_UNSPECIFIED
	switch r.Decision {
	case audit.Allow:
		d = kbsv1.Decision_DECISION_ALLOW
	case audit.Deny:
		d = kbsv1.Decision_DECISION_DENY
	}
	return &kbsv1.AuditRecord{
		Sequence:       r.Seq,
		Time:           timestamppb.New(r.Time),
		RequestId:      r.RequestID,
		CallerSpiffeId: r.Caller,
		Operation:      r.Operation,
		KeyId:          r.KeyID,
		KeyVersion:     r.KeyVersion,
		PolicyVersion:  r.PolicyVersion,
		Decision:       d,
		ReasonCodes:    r.Reasons,
		QuoteDigest:    r.QuoteDigest,
		NonceDigest:    r.NonceDigest,
		Measurements:   r.Measurements,
		Simulated:      r.Simulated,
		Details:        r.Details,
		PrevHash:       r.PrevHash.String(),
		RecordHash:     r.Hash.String(),
	}
}
