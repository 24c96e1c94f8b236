// Package server is the key broker's gRPC server core: it wires the key
// release service (KeyBrokerService), the administration service
// (AdminService), the authorization table, the audit log and the mapping of
// errors to gRPC status.
//
// Usage (what cmd/kbs serve does):
//
//	srv, err := server.New(server.Config{
//		Store:    st,                     // *store.Store, opened with the KEK
//		Verifier: v,                      // *verifier.Verifier
//		AdminIDs: []string{"spiffe://example.org/ns/cml-system/sa/kbsctl"},
//		AuditorIDs: []string{"spiffe://example.org/ns/audit/*"},
//		Now:      time.Now,
//		Logger:   logger,
//		Metrics:  m,                      // *metrics.Metrics, or nil
//	})
//	creds, err := identity.ServerCredentials(src, nil) // mTLS: every caller presents an SVID
//	g := grpc.NewServer(append(srv.ServerOptions(), grpc.Creds(creds))...)
//	srv.Register(g)
//	err = g.Serve(lis)
//
// ServerOptions holds the interceptors (request ids, authorization, the
// single error-to-status mapping), the message size limit and the keepalive
// settings. Handlers refuse to run without the authorization interceptor's
// grant in their context, so a grpc.Server built without ServerOptions fails
// closed. Health checks are not served on this server: every method
// registered here must have an entry in the authorization table, and the
// standard health service has none, so cmd/kbs serves it on its own
// plaintext listener.
//
// Everything the server depends on is injected through Config: the clock,
// the random source, the logger, the quote verifier, the metrics sink.
package server
