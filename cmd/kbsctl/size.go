package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the accepted suffixes of a size flag, case-insensitive.
// Decimal units (KB, MB) are refused rather than guessed at.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30},
	{"b", 1},
}

// parseSize parses a byte size: a decimal integer optionally followed by
// B, K/KiB, M/MiB or G/GiB (binary units), e.g. "1MiB", "64k", "4096".
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("empty size; use e.g. 1MiB, 256KiB or 4096")
	}
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			if strings.HasSuffix(t, "kb") || strings.HasSuffix(t, "mb") || strings.HasSuffix(t, "gb") {
				return 0, fmt.Errorf("size %q: decimal units are ambiguous; use KiB, MiB or GiB", s)
			}
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			mult = u.mult
			break
		}
	}
	n, err := strconv.ParseUint(t, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a whole number of bytes with an optional unit (B, KiB, MiB, GiB), e.g. 1MiB", s)
	}
	if n > uint64(math.MaxInt64/mult) {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(n) * mult, nil
}

// sizeFlag is a flag.Value holding a byte size parsed by parseSize.
type sizeFlag struct{ n int64 }

func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	f.n = n
	return nil
}

func (f *sizeFlag) String() string {
	if f == nil || f.n == 0 {
		return "0"
	}
	for _, u := range []struct {
		name string
		mult int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if f.n%u.mult == 0 {
			return strconv.FormatInt(f.n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(f.n, 10)
}
