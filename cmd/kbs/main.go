// Command kbs is the key broker of the Confidential Model Loader: a gRPC
// service that keeps model keys in a bbolt file, encrypted at rest, and
// releases one only to a workload that presents an allowed SPIFFE ID over
// mTLS and proves with a fresh Intel TDX quote that it runs in an approved
// trust domain.
//
//	kbs init  --data-dir DIR      create the KEK and the keystore
//	kbs serve --data-dir DIR ...  run the broker
//	kbs compact --db PATH         purge destroyed keys' freed pages (offline)
//
// main only wires the process to run; cli.go holds the command table and
// exit codes, init.go, serve.go and compact.go one subcommand each, and docs/kbs.md the
// user documentation.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// defaultGCPercent is the garbage collector's target (GOGC) unless the
// environment sets GOGC. The broker's live heap is small (about 10 MB under
// load) while each release allocates some 150 KB, so Go's default of 100
// runs a collection every few dozen releases: about a tenth of the
// broker's CPU at 1000 releases/s. 400 collects a quarter as often for
// about 30 MB more heap. GOMEMLIMIT, if set, still bounds the heap.
const defaultGCPercent = 400

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	// SIGINT/SIGTERM cancel ctx: serve shuts down gracefully and exits 0.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
