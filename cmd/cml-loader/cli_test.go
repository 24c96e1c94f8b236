package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cml-project/cml/client/clienttest"
	"github.com/cml-project/cml/emdl"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func runCLI(args []string, env map[string]string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, envOf(env), &o, &e)
	return code, o.String(), e.String()
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}} {
		code, out, errOut := runCLI(args, nil)
		if code != 0 || errOut != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
		}
		for _, want := range []string{"Exit codes:", "  3  denied", "  4  the key broker", "  5  bad model", ".cml-loader-staging",
			"CML_KBS)", "CML_KBS_SPIFFE_ID", "CML_KEY)", "CML_KEY_VERSION", "CML_SRC", "CML_DST", "CML_SPIFFE_SOCKET", "SPIFFE_ENDPOINT_SOCKET",
			"CML_SVID_CERT", "CML_SVID_KEY", "CML_BUNDLE", "CML_QUOTE_PROVIDER", "CML_DEV_INSECURE_SIMULATED_TDX", "CML_TIMEOUT",
			"CML_POST_QUANTUM", "CML_LOG_LEVEL", "(default 5m0s)", "(default configfs)",
			"--verify-plaintext-hash  (CML_VERIFY_PLAINTEXT_HASH)", "off by default"} {
			if !strings.Contains(out, want) {
				t.Errorf("help lacks %q", want)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	base := []string{"--kbs", "k:1", "--kbs-spiffe-id", "spiffe://example.org/kbs", "--key", "m", "--src", "s", "--dst", "d", "--spiffe-socket", "unix:///s"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"nothing", nil, nil, "missing the broker address (--kbs), the broker's SPIFFE ID (--kbs-spiffe-id), the key id (--key), the encrypted model directory (--src), and the output path (--dst)"},
		{"unknown flag", []string{"--nope"}, nil, "flag provided but not defined: -nope"},
		{"argument", append(base, "extra"), nil, `unexpected argument "extra"`},
		{"bad env", base, map[string]string{"CML_KEY_VERSION": "two"}, `invalid value "two" for CML_KEY_VERSION`},
		{"bad bool env", base, map[string]string{"CML_POST_QUANTUM": "maybe"}, "CML_POST_QUANTUM"},
		{"bad hash env", base, map[string]string{"CML_VERIFY_PLAINTEXT_HASH": "sometimes"}, `invalid value "sometimes" for CML_VERIFY_PLAINTEXT_HASH`},
		{"version too big", append(base, "--key-version", "4294967296"), nil, "beyond 4294967295"},
		{"log level", append(base, "--log-level", "loud"), nil, `invalid --log-level "loud"`},
		{"spiffe id", append(base[:2:2], "--kbs-spiffe-id", "kbs", "--key", "m"), nil, `invalid --kbs-spiffe-id "kbs"`},
		{"trust domain id", append(base, "--kbs-spiffe-id", "spiffe://example.org"), nil, "names a trust domain"},
		{"provider", append(base, "--quote-provider", "sgx"), nil, `invalid --quote-provider "sgx"`},
		{"simulated without dir", append(base, "--quote-provider", "simulated"), nil, "needs --dev-insecure-simulated-tdx"},
		{"dir without simulated", append(base, "--dev-insecure-simulated-tdx", "/x"), nil, "needs --quote-provider simulated"},
		{"bad sim dir", append(base, "--quote-provider", "simulated", "--dev-insecure-simulated-tdx", "/nonexistent"), nil, "--dev-insecure-simulated-tdx"},
		{"timeout", append(base, "--timeout", "0s"), nil, "must be positive"},
		{"no identity", base[:10], nil, "missing the identity"},
		{"socket and files", append(base, "--svid-cert", "c", "--svid-key", "k", "--bundle", "b"), nil, "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(tc.args, tc.env)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, errOut)
			}
			if !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "Run 'cml-loader --help'") || out != "" {
				t.Errorf("stderr %q, want %q and the help pointer", errOut, tc.want)
			}
		})
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{
		"CML_KBS": "env:1", "CML_KBS_SPIFFE_ID": "spiffe://example.org/kbs", "CML_KEY": "env-key", "CML_KEY_VERSION": "7",
		"CML_SRC": "/enc", "CML_DST": "/dst", "CML_TIMEOUT": "90s", "CML_POST_QUANTUM": "true", "CML_LOG_LEVEL": "debug",
		"SPIFFE_ENDPOINT_SOCKET": "unix:///spire.sock",
	}
	c, err := parse([]string{"--key", "flag-key", "--timeout", "1m"}, envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if c.kbs != "env:1" || c.key != "flag-key" || c.keyVersion != 7 || c.src != "/enc" || c.dst != "/dst" ||
		c.timeout.String() != "1m0s" || !c.postQuantum || c.logLevel != "debug" || c.socket != "unix:///spire.sock" || c.quoteProvider != "configfs" {
		t.Errorf("parsed %+v", *c)
	}
	// CML_SPIFFE_SOCKET beats SPIFFE_ENDPOINT_SOCKET; SVID files disable
	// the Workload API default.
	env["CML_SPIFFE_SOCKET"] = "unix:///cml.sock"
	if c, _ := parse(nil, envOf(env)); c.socket != "unix:///cml.sock" {
		t.Errorf("socket %q", c.socket)
	}
	delete(env, "CML_SPIFFE_SOCKET")
	if c, _ := parse([]string{"--svid-cert", "c", "--svid-key", "k", "--bundle", "b"}, envOf(env)); c.socket != "" || c.svidCert != "c" {
		t.Errorf("with files: socket %q cert %q", c.socket, c.svidCert)
	}
	// An explicitly false flag wins over a true environment value.
	if c, _ := parse([]string{"--post-quantum=false"}, envOf(env)); c.postQuantum {
		t.Error("--post-quantum=false lost to CML_POST_QUANTUM=true")
	}

	// The plaintext hash re-check is off unless asked for, by flag or
	// environment, and reaches loader.Config.
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want bool
	}{
		{nil, nil, false},
		{[]string{"--verify-plaintext-hash"}, nil, true},
		{nil, map[string]string{"CML_VERIFY_PLAINTEXT_HASH": "true"}, true},
		{nil, map[string]string{"CML_VERIFY_PLAINTEXT_HASH": "1"}, true},
		{[]string{"--verify-plaintext-hash=false"}, map[string]string{"CML_VERIFY_PLAINTEXT_HASH": "true"}, false},
	} {
		c, err := parse(tc.args, envOf(tc.env))
		if err != nil {
			t.Fatalf("%v %v: %v", tc.args, tc.env, err)
		}
		c.timeout = time.Minute
		cfg, err := loaderConfig(c, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("%v %v: %v", tc.args, tc.env, err)
		}
		if cfg.VerifyPlaintextHash != tc.want {
			t.Errorf("%v %v: VerifyPlaintextHash %v, want %v", tc.args, tc.env, cfg.VerifyPlaintextHash, tc.want)
		}
	}
}

// fixture: a broker trusting a tdxsim directory, SVID files for the loader
// and an encrypted model.
type fixture struct {
	b                 *clienttest.Broker
	simDir, src, out  string
	cert, key, bundle string
}

func newFixture(t *testing.T, o clienttest.Options) *fixture {
	t.Helper()
	f := &fixture{simDir: filepath.Join(t.TempDir(), "tdxsim")}
	o.SimDir = f.simDir
	f.b = clienttest.New(t, o)
	dek := f.b.ImportKey(t, "llama", f.b.DefaultPolicy())
	plain := t.TempDir()
	data := make([]byte, 100<<10)
	rand.Read(data)
	os.WriteFile(filepath.Join(plain, "weights.bin"), data, 0o644)
	os.WriteFile(filepath.Join(plain, "config.json"), []byte("{}"), 0o644)
	f.src = filepath.Join(t.TempDir(), "llama.emdl")
	if _, err := emdl.Encrypt(context.Background(), dek, plain, f.src, emdl.EncryptOptions{KeyID: "llama", KeyVersion: 1}); err != nil {
		t.Fatal(err)
	}
	f.out = t.TempDir()
	f.cert, f.key, f.bundle = f.b.WriteSVIDFiles(t, t.TempDir(), "ns/ml/sa/loader")
	return f
}

// env configures everything through CML_* variables.
func (f *fixture) env(dst string) map[string]string {
	return map[string]string{
		"CML_KBS": f.b.Addr, "CML_KBS_SPIFFE_ID": f.b.KBSID.String(), "CML_KEY": "llama", "CML_SRC": f.src, "CML_DST": dst,
		"CML_SVID_CERT": f.cert, "CML_SVID_KEY": f.key, "CML_BUNDLE": f.bundle,
		"CML_QUOTE_PROVIDER": "simulated", "CML_DEV_INSECURE_SIMULATED_TDX": f.simDir, "CML_TIMEOUT": "30s",
	}
}

func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("stderr line %q is not JSON", l)
		}
		out = append(out, m)
	}
	return out
}

func TestRunSimulated(t *testing.T) {
	f := newFixture(t, clienttest.Options{})
	dst := filepath.Join(f.out, "llama")
	code, out, errOut := runCLI(nil, f.env(dst))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if out != "" {
		t.Errorf("stdout %q", out)
	}
	lines := jsonLines(t, errOut)
	if len(lines) != 2 || lines[0]["level"] != "WARN" || !strings.Contains(lines[0]["msg"].(string), "DEVELOPMENT ONLY") ||
		lines[1]["msg"] != "model decrypted" || lines[1]["files"] != 2.0 {
		t.Fatalf("log:\n%s", errOut)
	}
	if _, err := os.Stat(filepath.Join(dst, "weights.bin")); err != nil {
		t.Fatal(err)
	}
	// A second run into the same, now full, destination is refused.
	code, _, errOut = runCLI(nil, f.env(dst))
	if code != 2 || !strings.Contains(errOut, "is not empty") {
		t.Errorf("rerun into a full --dst: exit %d, %s", code, errOut)
	}
}

// TestRunPlaintextHash: a good model loads with and without the plaintext
// hash re-check, and a tampered chunk is refused (exit 5) either way.
func TestRunPlaintextHash(t *testing.T) {
	f := newFixture(t, clienttest.Options{})
	for _, verify := range []string{"", "true"} {
		env := f.env(filepath.Join(t.TempDir(), "llama"))
		env["CML_VERIFY_PLAINTEXT_HASH"] = verify
		code, _, errOut := runCLI(nil, env)
		lines := jsonLines(t, errOut)
		if code != 0 || lines[len(lines)-1]["plaintext_hash_verified"] != (verify == "true") {
			t.Fatalf("CML_VERIFY_PLAINTEXT_HASH=%q: exit %d: %s", verify, code, errOut)
		}
		if _, err := os.Stat(filepath.Join(env["CML_DST"], "weights.bin")); err != nil {
			t.Fatal(err)
		}
	}

	p := filepath.Join(f.src, "weights.bin")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--verify-plaintext-hash"}} {
		dst := filepath.Join(t.TempDir(), "llama")
		code, _, errOut := runCLI(args, f.env(dst))
		if code != 5 || !strings.Contains(errOut, "weights.bin") || !strings.Contains(errOut, "chunk") {
			t.Errorf("tampered chunk, %v: exit %d, want 5 naming the file and chunk: %s", args, code, errOut)
		}
		if _, err := os.Lstat(dst); err == nil {
			t.Errorf("tampered chunk, %v: %s was written", args, dst)
		}
	}
}

func TestRunDenied(t *testing.T) {
	f := newFixture(t, clienttest.Options{})
	cert, key, _ := f.b.WriteSVIDFiles(t, t.TempDir(), "ns/other/sa/intruder")
	env := f.env(filepath.Join(f.out, "llama"))
	code, _, errOut := runCLI([]string{"--svid-cert", cert, "--svid-key", key}, env)
	if code != 3 {
		t.Fatalf("exit %d, want 3: %s", code, errOut)
	}
	last := jsonLines(t, errOut)
	l := last[len(last)-1]
	if l["reason"] != "spiffe_id_not_allowed" || l["request_id"] == "" || l["exit_code"] != 3.0 || l["level"] != "ERROR" {
		t.Errorf("denial line %v", l)
	}
}

func TestRunUnavailable(t *testing.T) {
	f := newFixture(t, clienttest.Options{Deferred: true})
	code, _, errOut := runCLI([]string{"--timeout", "700ms"}, f.env(filepath.Join(f.out, "llama")))
	if code != 4 {
		t.Fatalf("exit %d, want 4: %s", code, errOut)
	}
}

func TestRunConfigFSOutsideTD(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/config/tsm/report"); err == nil {
		t.Skip("this machine has configfs-tsm")
	}
	f := newFixture(t, clienttest.Options{})
	env := f.env(filepath.Join(f.out, "llama"))
	delete(env, "CML_DEV_INSECURE_SIMULATED_TDX")
	env["CML_QUOTE_PROVIDER"] = "configfs"
	code, _, errOut := runCLI(nil, env)
	if code != 1 || !strings.Contains(errOut, "configfs-tsm") {
		t.Fatalf("configfs outside a TD: exit %d, %s", code, errOut)
	}
}
