// Command kbsctl is the admin CLI of the Confidential Model Loader: it
// generates model keys and encrypts, decrypts and inspects models (and, in
// later releases, manages keys, policies and the audit log of a kbs).
//
// main only wires the process to run; see cli.go for the command tree and
// docs/kbsctl.md for the user documentation.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// SIGINT/SIGTERM cancel ctx: commands stop, remove what they started to
	// write and exit with exitInterrupted.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if os.Getenv("KBSCTL_REPORT_RSS") == "1" {
		reportPeakRSS(os.Stderr)
	}
	os.Exit(code)
}
