package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseTimeFlag(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"24h":                       now.Add(-24 * time.Hour),
		"0s":                        now,
		"2025-01-31":                time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC),
		"2025-01-31T10:11:12":       time.Date(2025, 1, 31, 10, 11, 12, 0, time.UTC),
		"2025-01-31T10:11:12+02:00": time.Date(2025, 1, 31, 8, 11, 12, 0, time.UTC),
		"2025-01-31T10:11:12.5Z":    time.Date(2025, 1, 31, 10, 11, 12, 5e8, time.UTC),
	} {
		got, err := parseTimeFlag("since", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "-5m", "2025-13-01", "1d"} {
		if _, err := parseTimeFlag("since", in, now); err == nil || !strings.Contains(err.Error(), "--since") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestParseLabels(t *testing.T) {
	got, err := parseLabels([]string{"team=ml", "empty=", "eq=a=b"})
	if err != nil || len(got) != 3 || got["team"] != "ml" || got["empty"] != "" || got["eq"] != "a=b" {
		t.Errorf("labels %v %v", got, err)
	}
	if got, err := parseLabels(nil); got != nil || err != nil {
		t.Errorf("no labels: %v %v", got, err)
	}
	for _, in := range [][]string{{"novalue"}, {"=v"}, {"a=1", "a=2"}} {
		var ue *usageError
		if _, err := parseLabels(in); !errors.As(err, &ue) {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestParseHexFlag(t *testing.T) {
	if b, err := parseHexFlag("mrtd", "0xABcd", 2); err != nil || len(b) != 2 || b[0] != 0xab {
		t.Errorf("0xABcd: %x %v", b, err)
	}
	if b, err := parseHexFlag("mrtd", "", 2); b != nil || err != nil {
		t.Errorf("empty: %x %v", b, err)
	}
	for _, in := range []string{"abc", "zz", "abcdef"} {
		if _, err := parseHexFlag("mrtd", in, 2); err == nil || !strings.HasPrefix(err.Error(), "--mrtd: ") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

// FuzzParseTimeFlag: never a panic; an accepted value is not in the future
// when it is a duration.
func FuzzParseTimeFlag(f *testing.F) {
	for _, s := range []string{"24h", "2025-01-31", "2025-01-31T10:11:12Z", "-1h", "1e9h", "9223372036s"} {
		f.Add(s)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseTimeFlag("since", s, now)
		if err != nil {
			return
		}
		if _, derr := time.ParseDuration(s); derr == nil && got.After(now) {
			t.Fatalf("%q: %v is after now", s, got)
		}
	})
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		720 * time.Hour:              "30 days",
		24 * time.Hour:               "24 hours",
		2*time.Hour + 59*time.Minute: "2 hours",
		90 * time.Minute:             "1h30m0s",
		1500 * time.Millisecond:      "2s",
		-3 * time.Second:             "-3s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}
