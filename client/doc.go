// Package client is the Go client of the key broker (kbs): the key release
// protocol for workloads in an Intel TDX trust domain (what cml-loader
// runs), the admin export of a key, and raw access to both gRPC services for
// kbsctl.
//
//	c, err := client.New(ctx, "kbs.cml-system:8443",
//		client.WithWorkloadAPI("unix:///run/spire/agent-sockets/agent.sock"),
//		client.WithServerID(spiffeid.RequireFromString("spiffe://example.org/ns/cml-system/sa/kbs")),
//		client.WithRetry(5*time.Minute))
//	defer c.Close()
//	key, err := c.ReleaseKey(ctx, "llama-3-8b", 1, quoteProvider)
//	if reason, requestID, ok := client.ReasonOf(err); ok { … } // denied: why, and the audit record
//	defer key.Zero()
//
// # Identity
//
// The client presents an X.509-SVID (WithWorkloadAPI, WithSVIDFiles or
// WithSource) and accepts the broker only if it presents a valid X.509-SVID
// of exactly the SPIFFE ID given with WithServerID, which is required.
// A broker that presents anything else fails the call with an error wrapping
// ErrServerIdentity, and such a failure is never retried.
//
// # Key release
//
// ReleaseKey runs DESIGN §4: GetChallenge, a fresh ephemeral HPKE key pair
// (DHKEM(X25519); MLKEM768-X25519 with WithPostQuantum), a TDX quote over
// keyrelease.ReportData(nonce, KEM, public key), ReleaseKey, and
// keyrelease.Open of the sealed key with the release info. The response must
// name the key id asked for, and the version asked for (version 0: any, the
// key's primary). The private key never leaves the process. ExportKey is the
// same for AdminService.ExportKey, with the export info and no quote.
//
// # Errors and retries
//
// PermissionDenied from the broker becomes a *DeniedError holding the
// broker's reason code and request id (ReasonOf reads them from any error of
// the broker). Other errors keep their gRPC status: status.Code works on
// every error returned here.
//
// WithRetry(maxWait) repeats an operation that failed with Unavailable (the
// broker not listening yet, a connection refused or reset, a failed
// handshake, collateral unavailable) or ran into the WithTimeout limit, and a
// release whose GetChallenge was refused with ResourceExhausted and the
// reason "too_many_challenges" (the broker bounds the outstanding challenges
// per SPIFFE ID and in total; many loaders of one ID starting together reach
// that bound until their releases complete). It waits with exponential
// backoff (100 ms doubling to 5 s, ±20 % jitter), until maxWait has passed
// since the operation began; then the error is an *UnavailableError. A
// release is repeated from GetChallenge with a new key pair.
// PermissionDenied, ResourceExhausted with any other reason, and every other
// answer are never retried, and of the raw Admin calls only the read-only
// ones are: a state change that failed with Unavailable may have happened.
package client
