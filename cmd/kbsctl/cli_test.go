package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// result is the outcome of one in-process kbsctl invocation.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// kbsctl runs the CLI in-process as a non-terminal would see it.
func kbsctl(t *testing.T, args ...string) result {
	t.Helper()
	return kbsctlEnv(t.Context(), &env{now: time.Now}, args...)
}

// kbsctlEnv runs the CLI with e (whose stdout and stderr are replaced by
// buffers unless set).
func kbsctlEnv(ctx context.Context, e *env, args ...string) result {
	var stdout, stderr bytes.Buffer
	if e.stdout == nil {
		e.stdout = &stdout
	}
	if e.stderr == nil {
		e.stderr = &stderr
	}
	if e.stdin == nil {
		e.stdin = strings.NewReader("")
	}
	code := e.run(ctx, args)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestHelpExitsZero(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage:", "kbsctl <group> <command>", "model", "Exit codes:", "130"}},
		{[]string{"-h"}, []string{"Command groups:"}},
		{[]string{"help"}, []string{"Command groups:"}},
		{[]string{"model", "--help"}, []string{"keygen", "encrypt", "decrypt", "inspect"}},
		{[]string{"help", "model"}, []string{"Commands:", "inspect"}},
		{[]string{"model", "encrypt", "--help"}, []string{"Usage:\n  kbsctl model encrypt (--key-file FILE | --kbs ADDR)", "Examples:", "--chunk-size SIZE", "(default 1)"}},
		{[]string{"model", "inspect", "x", "-h"}, []string{"kbsctl model inspect DIR [--json]", "--json"}},
		{[]string{"help", "model", "decrypt"}, []string{"kbsctl model decrypt --key-file FILE", "--key-version N"}},
	} {
		r := kbsctl(t, tc.args...)
		if r.code != exitOK || r.stderr != "" {
			t.Errorf("kbsctl %q: %v", tc.args, r)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("kbsctl %q: stdout lacks %q:\n%s", tc.args, w, r.stdout)
			}
		}
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		msg, run string
	}{
		{nil, "kbsctl: missing command group", "kbsctl --help"},
		{[]string{"nope"}, `kbsctl: unknown command group "nope" (known: key, policy, model, audit, collateral, dev)`, "kbsctl --help"},
		{[]string{"--verbose"}, "kbsctl: unknown flag --verbose", "kbsctl --help"},
		{[]string{"model"}, "kbsctl: missing model command", "kbsctl model --help"},
		{[]string{"model", "frobnicate"}, `unknown model command "frobnicate" (known: keygen, encrypt, decrypt, inspect)`, "kbsctl model --help"},
		{[]string{"model", "inspect"}, "kbsctl: inspect: missing DIR", "kbsctl model inspect --help"},
		{[]string{"model", "inspect", "a", "b"}, `inspect: unexpected argument "b" after DIR`, "kbsctl model inspect --help"},
		{[]string{"model", "inspect", "a", "--jsn"}, "inspect: unknown flag --jsn", "kbsctl model inspect --help"},
		{[]string{"model", "encrypt", "x"}, `encrypt takes no arguments, got ["x"]`, "kbsctl model encrypt --help"},
		{[]string{"model", "encrypt", "--in"}, "encrypt: flag --in needs a value", "kbsctl model encrypt --help"},
		{[]string{"model", "encrypt", "--chunk-size", "1MB"}, `invalid value "1MB" for flag --chunk-size`, "kbsctl model encrypt --help"},
		{[]string{"model", "decrypt", "--quiet=maybe"}, `invalid boolean value "maybe" for --quiet`, "kbsctl model decrypt --help"},
		{[]string{"help", "nope"}, `help: unknown command group "nope"`, "kbsctl --help"},
		{[]string{"help", "model", "nope"}, `help: unknown model command "nope"`, "kbsctl model --help"},
	} {
		r := kbsctl(t, tc.args...)
		if r.code != exitUsage {
			t.Errorf("kbsctl %q: want exit %d: %v", tc.args, exitUsage, r)
			continue
		}
		if !strings.Contains(r.stderr, tc.msg) || !strings.Contains(r.stderr, "Run '"+tc.run+"' for usage.") {
			t.Errorf("kbsctl %q: stderr lacks %q or the pointer to %q:\n%s", tc.args, tc.msg, tc.run, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("kbsctl %q: wrote to stdout on a usage error:\n%s", tc.args, r.stdout)
		}
	}
}

// Every command documents itself and every flag it defines.
func TestEveryCommandIsDocumented(t *testing.T) {
	for _, g := range commandGroups() {
		if g.name == "" || g.summary == "" || len(g.commands) == 0 {
			t.Errorf("group %q: missing name, summary or commands", g.name)
		}
		for _, c := range g.commands {
			path := g.name + " " + c.name
			if c.summary == "" || c.synopsis == "" || !strings.Contains(c.help, "Examples:\n  kbsctl ") || !strings.Contains(c.help, "kbsctl "+path) {
				t.Errorf("%s: needs a summary, a synopsis and help with examples", path)
			}
			for _, a := range c.args {
				if !strings.Contains(c.synopsis, a) {
					t.Errorf("%s: synopsis %q does not name argument %s", path, c.synopsis, a)
				}
			}
			r := kbsctl(t, append(append([]string{g.name}, strings.Fields(c.name)...), "--help")...)
			if r.code != exitOK {
				t.Fatalf("%s --help: %v", path, r)
			}
			fs := flag.NewFlagSet(path, flag.ContinueOnError)
			c.setup(fs)
			fs.VisitAll(func(f *flag.Flag) {
				if f.Usage == "" || !strings.Contains(r.stdout, "--"+f.Name) {
					t.Errorf("%s: flag --%s is undocumented", path, f.Name)
				}
			})
		}
	}
}

func TestCommandNamesUnique(t *testing.T) {
	var groups []string
	for _, g := range commandGroups() {
		if slices.Contains(groups, g.name) {
			t.Errorf("duplicate group %q", g.name)
		}
		groups = append(groups, g.name)
		var names []string
		for _, c := range g.commands {
			if slices.Contains(names, c.name) {
				t.Errorf("duplicate command %s %s", g.name, c.name)
			}
			names = append(names, c.name)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantPos  []string
		wantJSON bool
		wantN    int
	}{
		{nil, nil, false, 0},
		{[]string{"dir"}, []string{"dir"}, false, 0},
		{[]string{"dir", "--json"}, []string{"dir"}, true, 0},
		{[]string{"--json", "dir"}, []string{"dir"}, true, 0},
		{[]string{"a", "-n", "3", "b", "--json"}, []string{"a", "b"}, true, 3},
		{[]string{"a", "--", "--json", "-n"}, []string{"a", "--json", "-n"}, false, 0},
		{[]string{"--", "-x"}, []string{"-x"}, false, 0},
		{[]string{"-", "--n=2"}, []string{"-"}, false, 2},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		js := fs.Bool("json", false, "")
		n := fs.Int("n", 0, "")
		pos, err := parseInterspersed(fs, tc.args)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !slices.Equal(pos, tc.wantPos) || *js != tc.wantJSON || *n != tc.wantN {
			t.Errorf("%q: got pos %q json %v n %d; want %q %v %d", tc.args, pos, *js, *n, tc.wantPos, tc.wantJSON, tc.wantN)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	if _, err := parseInterspersed(fs, []string{"a", "--nope"}); err == nil {
		t.Error("unknown flag after a positional was accepted")
	}
}

func TestExitCodes(t *testing.T) {
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		want int
	}{
		{t.Context(), nil, exitOK},
		{t.Context(), errors.New("boom"), exitFailure},
		{t.Context(), usagef("bad"), exitUsage},
		{t.Context(), fmt.Errorf("wrapped: %w", &codedError{code: exitRefused, err: errors.New("refused")}), exitRefused},
		{canceled, fmt.Errorf("decrypt: %w", context.Canceled), exitInterrupted},
		// A cancellation error from elsewhere while ctx is live is a failure.
		{t.Context(), context.Canceled, exitFailure},
	} {
		groups := []*group{{name: "g", summary: "s", commands: []*command{{
			name: "c", synopsis: "", summary: "s", help: "h",
			setup: func(*flag.FlagSet) action {
				return func(context.Context, *env, []string) error { return tc.err }
			},
		}}}}
		var stderr bytes.Buffer
		e := &env{stdout: &bytes.Buffer{}, stderr: &stderr, now: time.Now}
		err := dispatch(tc.ctx, e, groups, []string{"g", "c"})
		if got := e.exitCode(tc.ctx, err); got != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestRunPrintsSanitizedError(t *testing.T) {
	var stderr bytes.Buffer
	e := &env{stdout: &bytes.Buffer{}, stderr: &stderr, now: time.Now}
	code := e.report(t.Context(), errors.New("bad name \x1b[31mred\x07"))
	if code != exitFailure {
		t.Errorf("exit %d", code)
	}
	if got, want := stderr.String(), `kbsctl: bad name \x1b[31mred\a`+"\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"plain/path.bin":    "plain/path.bin",
		"tab\there":         `tab\there`,
		"uni ü ok":          "uni ü ok",
		"bad\xffutf8":       `bad\xffutf8`,
		"line\nbreak\r":     `line\nbreak\r`,
		"bidi\u202eevil":    `bidi\u202eevil`,
		"zero-width\u200bx": `zero-width\u200bx`,
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}
