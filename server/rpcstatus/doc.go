// Package rpcstatus is the one place where the key broker's errors become
// gRPC status. Handlers return ordinary Go errors — an *Error built with
// Deny, Invalid or New, or a keystore sentinel — and the unary interceptor
// converts them, attaches a kbsv1.ErrorDetail{reason_code, request_id} and
// logs the call once.
//
// Usage:
//
//	g := grpc.NewServer(grpc.ChainUnaryInterceptor(
//		rpcstatus.UnaryInterceptor(rpcstatus.Options{Logger: log, Rand: rand.Reader, Now: time.Now}),
//		... // authorization, then the handler
//	))
//
//	// in a handler:
//	return nil, rpcstatus.Deny(policy.ReasonNonceReused, err) // PermissionDenied "nonce_reused"
//	return nil, rpcstatus.Invalid("key_id: %v", err)          // InvalidArgument with that message
//	id := rpcstatus.RequestID(ctx)                            // for responses and audit records
//
//	// in a client or test:
//	d := rpcstatus.DetailOf(err) // d.ReasonCode, d.RequestId
//
// # What the caller sees
//
// The status message is the reason code alone, except for InvalidArgument
// errors built with Invalid (and the keystore's validation errors), whose
// message describes the caller's own input. The inner error — a verifier
// detail, a keystore error naming records — goes only to the log line, under
// "error". A denied release therefore returns exactly
// PermissionDenied, "<reason>", ErrorDetail{reason, request id}.
//
// # Codes
//
// Handlers choose the code of an *Error. For other errors Classify decides:
// context.Canceled → Canceled, context.DeadlineExceeded → DeadlineExceeded,
// identity.ErrNoPeerID → Unauthenticated, store.ErrKeyNotFound,
// ErrVersionNotFound, ErrPolicyNotFound → NotFound, ErrKeyExists →
// AlreadyExists, ErrKeyDestroyed and ErrKeyDisabled → FailedPrecondition,
// ErrInvalidArgument → InvalidArgument and ErrPrimaryVersion →
// FailedPrecondition with reason primary_version (policy.ReasonPrimaryVersion), both
// with the keystore's message, which names only the caller's input; anything else
// → Internal (reason "internal"). The key release service never relies on
// this mapping: it turns every failure into PermissionDenied itself, so a
// workload cannot tell a missing key from a refused one by the code.
//
// # Request ids
//
// Each call gets 16 lowercase hex characters (64 bits from the injected
// random source), in the context (RequestID), in the cml-request-id response
// header, in the ErrorDetail of a failure, and in the audit record of the
// decision, so an operator can go from a client's error to the log line and
// the audit record.
//
// # Log line
//
// One line per call, message "rpc", with method, caller (the verified
// SPIFFE ID or ""), request_id, duration, code, and for failures reason and
// error. OK is logged at Info, failures of the caller at Warn, failures of
// the server (Internal, Unavailable, Unimplemented, Unknown, DataLoss) at
// Error.
package rpcstatus
