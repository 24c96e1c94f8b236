// Package identity is the SPIFFE identity layer shared by the key broker,
// the loader and kbsctl: where the X.509-SVID and trust bundle come from,
// the mutual-TLS configurations built on them, and the caller's SPIFFE ID on
// the server side.
//
// Open a source — the SPIRE agent's Workload API, or files:
//
//	src, err := identity.Open(ctx, identity.Config{Socket: "unix:///run/spire/agent.sock"})
//	// or: identity.Config{SVIDCert: "svid.pem", SVIDKey: "svid-key.pem", Bundle: "bundle.pem"}
//	defer src.Close()
//
// Serve gRPC (the broker). Every client must present an X.509-SVID of the
// server's trust domain; each RPC then asks who called:
//
//	creds, err := identity.ServerCredentials(src, nil) // nil: any ID of the trust domain
//	srv := grpc.NewServer(grpc.Creds(creds))
//	// in a handler:
//	caller, err := identity.PeerID(ctx)
//
// Dial it (the loader, kbsctl). The server must present exactly the
// expected SPIFFE ID:
//
//	kbsID := spiffeid.RequireFromString("spiffe://example.org/kbs")
//	creds, err := identity.ClientCredentials(src, kbsID)
//	conn, err := grpc.NewClient("kbs.cml-system:8443", grpc.WithTransportCredentials(creds))
//
// Both TLS configurations are TLS 1.3 only and read the source on every
// handshake (GetCertificate, GetClientCertificate, GetConfigForClient and
// VerifyPeerCertificate callbacks), so a rotated SVID or bundle is used by
// the next connection without a restart. Established connections keep the
// certificates they were made with; a server that must notice rotation on
// long-lived connections should bound their age (gRPC keepalive
// MaxConnectionAge).
//
// The Workload API mode uses go-spiffe's workloadapi.X509Source, which
// follows the agent's stream of rotated SVIDs. The files mode re-checks the
// three files at most every Config.ReloadInterval (default 2 s) with a stat
// and reloads them when one changed; replace the files atomically (write,
// then rename), as Kubernetes secret volumes and SPIRE helpers do. A reload
// that fails keeps the previous material and is retried.
//
// For tests, package devca issues SVIDs from an in-process CA and
// NewStaticSource wraps one in a Source.
package identity
