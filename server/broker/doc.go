// Package broker is the key release service (cml.kbs.v1.KeyBrokerService,
// DESIGN §4): challenges, quote verification, policy evaluation and the
// HPKE-sealed release of a key to a trust domain.
//
// Usage (package server wires it; handlers need the authorization
// interceptor's grant in their context):
//
//	svc, err := broker.New(broker.Config{Store: st, Verifier: v, Now: time.Now, Rand: rand.Reader, Logger: log})
//	kbsv1.RegisterKeyBrokerServiceServer(g, svc)
//
// # GetChallenge
//
// The caller (its SPIFFE ID from the verified mTLS certificate, never from
// the request) gets 32 random bytes bound to (caller, key id), valid for
// Config.ChallengeTTL (60 s), usable once — but only if the key's current
// policy names the caller. Otherwise it is denied with
// spiffe_id_not_allowed, also when the key does not exist or has no policy,
// so a workload cannot probe key names; the audit record holds the exact
// reason (key_not_found, no_policy, policy_invalid). Denials are audited; an
// issued challenge is not a decision on the key and is not (the release that
// consumes it is, with the nonce's SHA-256).
//
// Outstanding challenges are bounded per caller (16) and in total (100 000);
// beyond either GetChallenge fails with ResourceExhausted
// too_many_challenges rather than evicting an outstanding challenge (which
// would make another loader's release fail after it produced its quote).
// Nonces are kept only as SHA-256 hashes, confirmed with a constant-time
// compare, and never logged. Expired challenges are swept on every call;
// consumed and expired nonces are remembered (bounded, oldest forgotten
// first) for one more TTL so that a replay is reported as nonce_reused or
// nonce_expired rather than nonce_unknown.
//
// # ReleaseKey
//
// In this order, stopping at the first failure:
//
//  1. request limits and syntax: quote ≤ 64 KiB and tee_public_key ≤ 4 KiB
//     (else ResourceExhausted request_too_large); key id syntax, a 32-byte
//     nonce, a supported KEM, a public key of its exact size, a quote
//     (else InvalidArgument invalid_argument). The nonce is not consumed.
//  2. consume the nonce: nonce_unknown, nonce_expired, nonce_reused,
//     nonce_wrong_caller, nonce_wrong_key. A nonce presented by another
//     caller or for another key is burnt too.
//  3. verify the quote (the verifier's reason code on failure;
//     collateral_unavailable is Unavailable, retryable). An authentic quote
//     whose TCB status is not UpToDate continues with its claims: the
//     policy's tcb_status check decides.
//  4. REPORTDATA must equal keyrelease.ReportData(nonce, kem, tee_public_key)
//     (constant-time compare): report_data_mismatch.
//  5. load the key's current policy (key_not_found, no_policy,
//     policy_invalid) and evaluate it (server/policy): the first failed
//     check's reason is returned, all of them are audited.
//  6. unwrap the requested version (0: primary): key_disabled,
//     key_destroyed, key_version_not_found.
//  7. HPKE-seal the key to tee_public_key with
//     keyrelease.ReleaseInfo(key id, version, nonce), clear the plaintext,
//     and respond with key id, version, algorithm, policy version and
//     request id.
//
// Every ReleaseKey call writes exactly one audit record: caller, key id and
// version, policy version, decision, reason codes, SHA-256 of the quote and
// of the nonce, the TD measurements seen, the simulated flag, and details
// (kem, tcb_status, verifier_reason). Never the nonce, the quote or key
// bytes. A release whose audit record cannot be written is withheld
// (Internal). Every denial is PermissionDenied (or the codes above) with
// the reason code as the whole message and an ErrorDetail.
package broker
