package client

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// DeniedError is the broker's PermissionDenied: a refused release (the key's
// policy, the quote, the nonce, an unknown key…) or an admin call the caller's
// role does not allow. Reason is the broker's stable reason code (for
// example "mrtd_not_allowed"; "unspecified" if the broker sent none) and
// RequestID finds the audit record. status.Code(err) is still
// PermissionDenied.
type DeniedError struct {
	Reason    string
	RequestID string
	st        *status.Status
}

func (e *DeniedError) Error() string {
	s := "client: denied by the key broker: " + e.Reason
	if e.RequestID != "" {
		s += " (request id " + e.RequestID + ")"
	}
	return s
}

// GRPCStatus returns the PermissionDenied status the error came from, so
// status.Code and status.FromError work on it.
func (e *DeniedError) GRPCStatus() *status.Status {
	if e.st == nil {
		return status.New(codes.PermissionDenied, e.Error())
	}
	return e.st
}

// ReasonOf returns the reason code and request id the broker attached to
// err: those of a *DeniedError, or the ErrorDetail of any other status error
// of the broker (for example "too_many_challenges" with ResourceExhausted).
// ok is false if err carries neither.
func ReasonOf(err error) (reason, requestID string, ok bool) {
	var d *DeniedError
	if errors.As(err, &d) {
		return d.Reason, d.RequestID, true
	}
	st, isStatus := status.FromError(err)
	if err == nil || !isStatus {
		return "", "", false
	}
	reason, requestID = errorDetail(st)
	if reason == unspecifiedReason {
		return "", requestID, false
	}
	return reason, requestID, true
}

const unspecifiedReason = "unspecified"

// errorDetail reads the broker's ErrorDetail from st.
func errorDetail(st *status.Status) (reason, requestID string) {
	for _, d := range st.Details() {
		if ed, ok := d.(*kbsv1.ErrorDetail); ok {
			reason, requestID = ed.GetReasonCode(), ed.GetRequestId()
			break
		}
	}
	reason, requestID = printable(reason), printable(requestID)
	if reason == "" {
		reason = unspecifiedReason
	}
	return reason, requestID
}

// printable bounds a string from the broker to 128 printable ASCII
// characters, so it cannot smuggle terminal escapes or newlines into logs.
func printable(s string) string {
	const maxLen = 128
	b := make([]byte, 0, min(len(s), maxLen))
	for i := 0; i < len(s) && len(b) < maxLen; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b = append(b, c)
		} else {
			b = append(b, '?')
		}
	}
	return string(b)
}
