package main

import (
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// listFlag is a flag that may be repeated: --id kbs --id loader.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// parseLabels turns repeated --label k=v values into a map. Keys must be
// unique; the broker checks their syntax and limits.
func parseLabels(values []string) (map[string]string, error) {
	if len(values) == 0 {
		return nil, nil
	}
	labels := make(map[string]string, len(values))
	for _, v := range values {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, usagef("--label %q: want KEY=VALUE, e.g. --label team=ml", v)
		}
		if _, dup := labels[k]; dup {
			return nil, usagef("--label %s is given twice", k)
		}
		labels[k] = val
	}
	return labels, nil
}

// versionFlag validates an optional --version value: 0 means "not given".
func versionFlag(name string, v uint) (uint32, error) {
	if v > math.MaxUint32 {
		return 0, usagef("--%s %d is out of range (1 to %d)", name, v, uint32(math.MaxUint32))
	}
	return uint32(v), nil
}

// parseHexFlag decodes a hex flag value of exactly n bytes (any case, an
// optional 0x prefix). Empty returns nil.
func parseHexFlag(name, s string, n int) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	t := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	b, err := hex.DecodeString(t)
	switch {
	case err != nil:
		return nil, usagef("--%s: not hex (%v); want %d hex digits", name, err, 2*n)
	case len(b) != n:
		return nil, usagef("--%s: %d hex digits, want %d (%d bytes)", name, len(t), 2*n, n)
	}
	return b, nil
}

// parseTimeFlag parses --since/--until: an RFC 3339 time
// (2025-01-31T12:00:00Z), a date (2025-01-31, midnight UTC), or a duration
// meaning that long before now (90m, 24h).
func parseTimeFlag(name, s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, usagef("--%s %s: a duration means that long ago and must not be negative", name, s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usagef("--%s %q: want an RFC 3339 time (2025-01-31T12:00:00Z), a date (2025-01-31, UTC) or a duration ago (24h)", name, s)
}

// formatTime prints a time for tables: UTC, seconds precision.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// plural returns "1 record" or "2 records".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// formatTS prints a protobuf timestamp like formatTime; unset prints "-".
func formatTS(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return formatTime(ts.AsTime())
}

// optBool is a boolean flag that knows whether it was given, so that
// --debug=false can override a default that is true.
type optBool struct {
	set, value bool
}

func (b *optBool) String() string {
	if b == nil || !b.set {
		return ""
	}
	return strconv.FormatBool(b.value)
}

func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	b.set, b.value = true, v
	return nil
}

func (b *optBool) IsBoolFlag() bool { return true }

// humanDuration prints a duration for people: "30 days", "5 hours",
// "12m0s".
func humanDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d/time.Hour))
	default:
		return d.Round(time.Second).String()
	}
}
