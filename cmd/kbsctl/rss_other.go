//go:build !unix

package main

import (
	"fmt"
	"io"
)

func reportPeakRSS(w io.Writer) {
	fmt.Fprintln(w, "kbsctl: peak RSS unavailable on this platform")
}
