// Package admin is the administration service (cml.kbs.v1.AdminService):
// keys, release policies, the audit log, policy dry runs and key export, on
// top of server/store.
//
// Usage (package server wires it; handlers need the authorization
// interceptor's grant in their context):
//
//	svc, err := admin.New(admin.Config{Store: st, Verifier: v, Now: time.Now, Rand: rand.Reader, Logger: log})
//	kbsv1.RegisterAdminServiceServer(g, svc)
//
// Who may call what is the authorization table's business (server/authz);
// this package implements the RPCs:
//
//   - Every call, read or write, allowed or failed, appends exactly one
//     audit record: operation (the RPC name), caller, key id and version,
//     policy version, decision (allow if the call was carried out, deny with
//     the error's reason code otherwise) and details. A write whose record
//     cannot be appended returns Internal (the change itself is already
//     committed; the log line says so).
//   - PutPolicy normalises the policy (server/policy: validation with every
//     problem in the InvalidArgument message, lowercase hex), sets key_id and
//     created_by (the caller's SPIFFE ID) and stores its deterministic
//     protobuf encoding as the next version.
//   - TestPolicy verifies the quote as ReleaseKey would (not REPORTDATA: no
//     nonce), evaluates a stored version or a draft, and returns every check.
//     A quote that does not verify is a failed "quote" check, not an error;
//     only collateral that cannot be obtained is Unavailable. Its audit
//     record is an allow (the dry run was carried out) with the dry run's
//     outcome in details (dry_run_decision, dry_run_reasons,
//     tested_spiffe_id), the quote digest and the measurements.
//   - ExportKey seals a key version to the caller's public key with
//     keyrelease.ExportInfo; disabled and destroyed versions are
//     FailedPrecondition. Key bytes are cleared after sealing; ImportKey
//     clears the request's key bytes once stored.
//   - DestroyKey erases one version (store.DestroyVersion) or, with
//     whole_key, the key (store.DestroyKey); both are idempotent. The
//     primary version cannot be destroyed alone: FailedPrecondition with
//     reason primary_version, whose message says to rotate first, then
//     destroy that version, or to destroy the whole key.
//   - List RPCs page with opaque tokens (base64url of the listing kind and
//     position) and return an empty next_page_token on the last page.
//
// Errors are returned as Go errors and become gRPC status in
// server/rpcstatus: keystore sentinels map to NotFound, AlreadyExists,
// FailedPrecondition and InvalidArgument there.
package admin
