package main

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

// FuzzParse runs the flag and environment parser on arbitrary command lines
// (arguments separated by "\n") and CML_KEY_VERSION / CML_TIMEOUT /
// CML_POST_QUANTUM values: it must never panic, and every failure must be a
// usage error (exit 2) or the help request.
func FuzzParse(f *testing.F) {
	f.Add("--kbs\nk:1\n--key-version\n3", "2", "5m", "true")
	f.Add("--help", "", "", "")
	f.Add("--key-version=99999999999", "x", "-1s", "maybe")
	f.Add("-timeout\n1h\nextra", "", "", "")
	f.Fuzz(func(t *testing.T, args, version, timeout, pq string) {
		var argv []string
		if args != "" {
			argv = strings.Split(args, "\n")
		}
		env := map[string]string{"CML_KEY_VERSION": version, "CML_TIMEOUT": timeout, "CML_POST_QUANTUM": pq}
		c, err := parse(argv, envOf(env))
		var ue *usageError
		switch {
		case err == nil:
			if c.keyVersion > 1<<32-1 {
				t.Fatalf("accepted key version %d", c.keyVersion)
			}
		case errors.Is(err, flag.ErrHelp), errors.As(err, &ue):
		default:
			t.Fatalf("parse error %T %v is not a usage error", err, err)
		}
	})
}
