// Package metrics is the key broker's Prometheus metrics: a few counters,
// one histogram and one gauge, written in the Prometheus text exposition
// format (version 0.0.4) by the standard library alone.
//
// Usage:
//
//	m, err := metrics.New(metrics.Options{Keys: st}) // st: *store.Store, counted at scrape time
//	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()))
//	cfg := server.Config{Metrics: m, …} // the server reports decisions and quote timings
//	http.Handle("/metrics", m)
//
// The metrics:
//
//	kbs_requests_total{method,code}               counter    gRPC calls completed, by full method and status code
//	kbs_release_decisions_total{decision,reason}  counter    ReleaseKey outcomes: allow/ok, deny/<reason code>
//	kbs_quote_verification_seconds                histogram  time to verify one TDX quote
//	kbs_keys{state}                               gauge      keys in the keystore by state, counted at scrape time
//
// Label values come from fixed sets (registered gRPC methods, status codes,
// stable reason codes); as a safeguard each labelled family keeps at most
// MaxSeries distinct label sets and counts the rest under the value
// "other". Nothing secret is ever a label: no key ids, no SPIFFE IDs.
//
// Why not client_golang: four metric families do not need its registry,
// collectors and protobuf exposition, and the text format is small enough
// to write and test here (metrics_test.go parses the output strictly).
package metrics
