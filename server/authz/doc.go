// Package authz is the key broker's deny-by-default authorization table:
// for every RPC, the roles that may call it, and the unary interceptor that
// enforces it.
//
// Usage (package server wires it):
//
//	az, err := authz.New(cfg.AdminIDs, cfg.AuditorIDs) // exact SPIFFE IDs or "spiffe://td/path/*"
//	g := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(rpcstatus.UnaryInterceptor(...), az.UnaryInterceptor(st, log)),
//		grpc.ChainStreamInterceptor(az.StreamInterceptor()),
//	)
//	// in a handler:
//	grant, err := authz.Require(ctx) // grant.Caller, grant.Role; refuses if the interceptor did not run
//
// # Roles
//
//	loader   every authenticated caller; the key's release policy decides (in the handler)
//	admin    callers matching Config.AdminIDs: every RPC
//	auditor  callers matching Config.AuditorIDs: the read-only AdminService RPCs
//
// # Table
//
//	/cml.kbs.v1.KeyBrokerService/GetChallenge     loader
//	/cml.kbs.v1.KeyBrokerService/ReleaseKey       loader
//	/cml.kbs.v1.AdminService/CreateKey            admin
//	/cml.kbs.v1.AdminService/ImportKey            admin
//	/cml.kbs.v1.AdminService/RotateKey            admin
//	/cml.kbs.v1.AdminService/DisableKey           admin
//	/cml.kbs.v1.AdminService/EnableKey            admin
//	/cml.kbs.v1.AdminService/DestroyKey           admin
//	/cml.kbs.v1.AdminService/PutPolicy            admin
//	/cml.kbs.v1.AdminService/ExportKey            admin
//	/cml.kbs.v1.AdminService/GetKey               admin, auditor
//	/cml.kbs.v1.AdminService/ListKeys             admin, auditor
//	/cml.kbs.v1.AdminService/GetPolicy            admin, auditor
//	/cml.kbs.v1.AdminService/ListPolicies         admin, auditor
//	/cml.kbs.v1.AdminService/TestPolicy           admin, auditor
//	/cml.kbs.v1.AdminService/ListAuditRecords     admin, auditor
//	/cml.kbs.v1.AdminService/VerifyAuditLog       admin, auditor
//
// Any other method — including grpc.health.v1.Health and reflection, should
// they be registered on the same server by mistake — is denied
// (PermissionDenied "not_authorized"), and so is every streaming call. The
// health service is served by cmd/kbs on its own plaintext listener, which
// does not use this interceptor. A test walks both services' descriptors and
// fails if a method has no entry or an entry names no method.
//
// # Enforcement
//
// The interceptor takes the caller's SPIFFE ID from the certificate the TLS
// handshake verified (identity.PeerID) — never from the request; without one
// the call is Unauthenticated. A denied call is PermissionDenied
// "not_authorized" and appends one audit record (operation = the RPC name,
// caller, the request's key id if any). An allowed call runs the handler
// with a Grant in its context; handlers call Require, so a server built
// without this interceptor refuses every call instead of serving it
// unauthorised.
package authz
