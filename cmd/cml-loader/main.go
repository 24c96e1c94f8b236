// Command cml-loader is the Kubernetes init container of the Confidential
// Model Loader: it attests to the key broker with a TDX quote and its
// SPIFFE identity, receives the model key, decrypts the model into a volume
// and exits. See docs/loader.md, or run cml-loader --help.
//
// main only wires the process to run (cli.go); package loader holds the
// logic.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// SIGTERM (the pod is deleted) cancels ctx: the loader stops and removes
	// its partial output.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
