package client

import "errors"

// DeniedError is a PermissionDenied answer of the broker.
type DeniedError struct {
	Reason    string
	RequestID string
}

func (e *DeniedError) Error() string {
	return "client: denied by the key broker: " + e.Reason + " (request id " + e.RequestID + ")"
}

// ReasonOf returns the reason code and request id of err.
func ReasonOf(err error) (reason, requestID string, ok bool) {
	var d *DeniedError
	if errors.As(err, &d) {
		return d.Reason, d.RequestID, true
	}
	return "", "", false
}
