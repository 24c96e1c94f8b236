package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is the minimum time between two redraws when
// Options.Interval is zero: about ten updates per second.
const DefaultInterval = 100 * time.Millisecond

// clearLine returns the cursor to column 0 and erases to the end of the
// line (ANSI EL), so a shorter line leaves no residue of a longer one.
const clearLine = "\r\x1b[K"

// Options configure a Bar.
type Options struct {
	// Label starts the line, e.g. "encrypt" or "decrypt".
	Label string
	// Total is the number of bytes expected; 0 or less means unknown, in
	// which case no percentage or ETA is shown.
	Total int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Interval is the minimum time between redraws; 0 means DefaultInterval.
	Interval time.Duration
}

// Bar is a progress line. Add may be called from many goroutines; Done and
// Clear must be called once, after the last Add. All methods of a nil *Bar
// do nothing, so callers can keep one code path for "display off".
type Bar struct {
	w        io.Writer
	label    string
	total    int64
	now      func() time.Time
	interval time.Duration
	start    time.Time

	done atomic.Int64

	mu       sync.Mutex // guards last, finished and writes to w
	last     time.Time
	finished bool
}

// New returns a Bar that draws on w. It draws nothing until the first Add.
func New(w io.Writer, opts Options) *Bar {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	interval := opts.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	start := now()
	return &Bar{
		w:        w,
		label:    opts.Label,
		total:    opts.Total,
		now:      now,
		interval: interval,
		start:    start,
		last:     start,
	}
}

// Add records n more bytes done and redraws the line if the last redraw is
// at least Interval old. A redraw already in progress on another goroutine
// is not waited for: that call simply skips drawing.
func (b *Bar) Add(n int64) {
	if b == nil {
		return
	}
	b.done.Add(n)
	if !b.mu.TryLock() {
		return
	}
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	now := b.now()
	if now.Sub(b.last) < b.interval {
		return
	}
	b.last = now
	fmt.Fprint(b.w, clearLine+b.line(now))
}

// Done replaces the line with a final summary (bytes, elapsed time, average
// rate) and ends it with a newline.
func (b *Bar) Done() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	now := b.now()
	elapsed := now.Sub(b.start)
	done := b.done.Load()
	fmt.Fprintf(b.w, "%s%s  %s in %s, %s\n", clearLine, b.label, Bytes(done),
		formatDuration(elapsed), Rate(done, elapsed))
}

// Clear erases the line, for example before an error message is printed.
func (b *Bar) Clear() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	fmt.Fprint(b.w, clearLine)
}

// line renders the status line for the instant now, without a line prefix.
func (b *Bar) line(now time.Time) string {
	done := b.done.Load()
	elapsed := now.Sub(b.start)
	if b.total <= 0 {
		return fmt.Sprintf("%s  %s  %s", b.label, Bytes(done), Rate(done, elapsed))
	}
	pct := float64(done) / float64(b.total) * 100
	if pct > 100 {
		pct = 100
	}
	eta := "ETA --"
	if done > 0 && elapsed > 0 {
		remaining := b.total - done
		if remaining < 0 {
			remaining = 0
		}
		secs := float64(remaining) * elapsed.Seconds() / float64(done)
		eta = "ETA " + formatDuration(time.Duration(secs*float64(time.Second)))
	}
	return fmt.Sprintf("%s  %s / %s  %3.0f%%  %s  %s", b.label, Bytes(done), Bytes(b.total),
		pct, Rate(done, elapsed), eta)
}

// Bytes formats n with binary units: "512 B", "1.5 KiB", "2.0 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Rate formats n bytes over d as a binary-unit rate, "-- B/s" when d is 0.
func Rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-- B/s"
	}
	return Bytes(int64(float64(n)/d.Seconds())) + "/s"
}

// formatDuration renders d compactly: "0.4s", "12s", "3m05s", "1h02m".
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
		fallthrough
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		s := int(d.Seconds())
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	default:
		m := int(d.Minutes())
		return fmt.Sprintf("%dh%02dm", m/60, m%60)
	}
}

// IsTerminal reports whether f looks like an interactive terminal: a
// character device other than the null device. It needs no ioctl, so it
// works without a dependency; a serial line or other character device is
// also reported as a terminal, which only means a status line is drawn on it.
func IsTerminal(f *os.File) bool {
	if f == nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	if null, err := os.Stat(os.DevNull); err == nil && os.SameFile(fi, null) {
		return false
	}
	return true
}
