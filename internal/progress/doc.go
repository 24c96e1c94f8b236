// Package progress draws a single, self-updating status line for a long
// byte-oriented operation (encrypting or decrypting a model) on a terminal.
//
// Usage:
//
//	var bar *progress.Bar // nil: no display
//	if !quiet && progress.IsTerminal(os.Stderr) {
//		bar = progress.New(os.Stderr, progress.Options{Label: "decrypt", Total: total})
//	}
//	opts.Progress = bar.Add // safe from many goroutines; a nil *Bar ignores calls
//	err := doWork(ctx, opts)
//	if err != nil {
//		bar.Clear() // leave a clean line for the error message
//	} else {
//		bar.Done() // replace the line with a final summary
//	}
//
// The line shows bytes done and total, percentage, average rate and ETA, and
// is redrawn at most once per Options.Interval (default 100 ms, i.e. ~10
// updates per second). The writer, the clock and the "is a terminal" decision
// are all the caller's, so the display is testable without a terminal.
package progress
