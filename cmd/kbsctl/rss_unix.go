//go:build unix

package main

import (
	"fmt"
	"io"
	"runtime"
	"syscall"
)

// reportPeakRSS prints the process's peak resident set size, for
// scripts/bench.sh (enabled by KBSCTL_REPORT_RSS=1; undocumented for users).
func reportPeakRSS(w io.Writer) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fmt.Fprintf(w, "kbsctl: peak RSS unavailable: %v\n", err)
		return
	}
	kib := int64(ru.Maxrss) // Linux and most BSDs: KiB
	if runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
		kib /= 1024 // bytes there
	}
	fmt.Fprintf(w, "kbsctl: peak-rss-kib=%d\n", kib)
}
