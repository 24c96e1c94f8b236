package progress

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

const MiB = 1 << 20

func TestBarThrottlesAndRenders(t *testing.T) {
	clk := newClock()
	var out bytes.Buffer
	b := New(&out, Options{Label: "decrypt", Total: 100 * MiB, Now: clk.Now})

	b.Add(10 * MiB) // same instant as start: no redraw yet
	if out.Len() != 0 {
		t.Fatalf("drew before the interval elapsed: %q", out.String())
	}
	clk.Advance(50 * time.Millisecond)
	b.Add(10 * MiB)
	if out.Len() != 0 {
		t.Fatalf("drew after 50ms with a 100ms interval: %q", out.String())
	}
	clk.Advance(50 * time.Millisecond) // 0.1 s elapsed, 25 MiB done
	b.Add(5 * MiB)
	want := "\r\x1b[Kdecrypt  25.0 MiB / 100.0 MiB   25%  250.0 MiB/s  ETA 0.3s"
	if out.String() != want {
		t.Fatalf("line:\n got %q\nwant %q", out.String(), want)
	}

	out.Reset()
	clk.Advance(99 * time.Millisecond)
	b.Add(MiB)
	if out.Len() != 0 {
		t.Fatalf("second redraw within the interval: %q", out.String())
	}

	clk.Advance(301 * time.Millisecond) // 0.5 s elapsed
	b.Add(74 * MiB)                     // 100 MiB done
	if !strings.Contains(out.String(), "100.0 MiB / 100.0 MiB  100%  200.0 MiB/s  ETA 0.0s") {
		t.Fatalf("final progress line: %q", out.String())
	}

	out.Reset()
	b.Done()
	if got, want := out.String(), "\r\x1b[Kdecrypt  100.0 MiB in 0.5s, 200.0 MiB/s\n"; got != want {
		t.Fatalf("summary:\n got %q\nwant %q", got, want)
	}
	out.Reset()
	b.Add(1)
	b.Done()
	b.Clear()
	if out.Len() != 0 {
		t.Fatalf("drew after Done: %q", out.String())
	}
}

func TestBarUnknownTotal(t *testing.T) {
	clk := newClock()
	var out bytes.Buffer
	b := New(&out, Options{Label: "encrypt", Now: clk.Now, Interval: time.Second})
	clk.Advance(2 * time.Second)
	b.Add(3 * 1024)
	if got, want := out.String(), "\r\x1b[Kencrypt  3.0 KiB  1.5 KiB/s"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestBarETAAndOvershoot(t *testing.T) {
	clk := newClock()
	var out bytes.Buffer
	b := New(&out, Options{Label: "x", Total: 10 * MiB, Now: clk.Now})
	clk.Advance(90 * time.Second)
	b.Add(MiB) // 1 MiB in 90 s: 9 MiB more takes 13.5 min
	if !strings.HasSuffix(out.String(), "ETA 13m30s") {
		t.Fatalf("ETA: %q", out.String())
	}
	out.Reset()
	clk.Advance(time.Hour)
	b.Add(20 * MiB) // more than announced: clamp to 100%, ETA 0
	if !strings.Contains(out.String(), "100%") || !strings.HasSuffix(out.String(), "ETA 0.0s") {
		t.Fatalf("overshoot: %q", out.String())
	}
}

func TestBarClear(t *testing.T) {
	clk := newClock()
	var out bytes.Buffer
	b := New(&out, Options{Label: "x", Total: 1, Now: clk.Now})
	b.Clear()
	if out.String() != "\r\x1b[K" {
		t.Fatalf("Clear wrote %q", out.String())
	}
	b.Done()
	if out.String() != "\r\x1b[K" {
		t.Fatalf("Done after Clear wrote %q", out.String())
	}
}

func TestNilBar(t *testing.T) {
	var b *Bar
	b.Add(1)
	b.Done()
	b.Clear()
	f := b.Add // a method value of a nil *Bar must be callable
	f(5)
}

func TestBarConcurrentAdds(t *testing.T) {
	var out syncBuffer
	b := New(&out, Options{Label: "x", Total: 64 * 1000, Interval: time.Nanosecond})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				b.Add(8)
			}
		})
	}
	wg.Wait()
	b.Done()
	if got := b.done.Load(); got != 64*1000 {
		t.Fatalf("done = %d, want %d", got, 64*1000)
	}
	if !strings.Contains(out.String(), "x  62.5 KiB in ") {
		t.Fatalf("summary missing: %q", out.String()[max(0, len(out.String())-80):])
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{MiB, "1.0 MiB"}, {2 << 30, "2.0 GiB"}, {5 << 40, "5.0 TiB"},
		{1<<63 - 1, "8.0 EiB"},
	} {
		if got := Bytes(tc.n); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0.0s"}, {400 * time.Millisecond, "0.4s"}, {12 * time.Second, "12s"},
		{185 * time.Second, "3m05s"}, {62 * time.Minute, "1h02m"},
	} {
		if got := formatDuration(tc.d); got != tc.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestIsTerminal(t *testing.T) {
	if IsTerminal(nil) {
		t.Error("nil file is a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Error("regular file is a terminal")
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer null.Close()
	if IsTerminal(null) {
		t.Error(os.DevNull + " is a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if IsTerminal(w) {
		t.Error("pipe is a terminal")
	}
}
