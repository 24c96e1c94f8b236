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
