package e2e

import (
	"bufio"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

const trustDomain = "e2e.test"

// world is one test's setup: certificates, a simulated TDX platform, the
// broker's data directory and, once started, the broker.
type world struct {
	t      *testing.T
	dir    string
	certs  string
	tdxsim string
	data   string
	mrtd   string // MRTD of the simulator's default TD, 96 hex digits

	kbs    *proc
	addr   string // host:port of the running kbs's mTLS gRPC server
	starts int
}

// newWorld makes the SVIDs (kbs, loader, admin, intruder), the simulated
// platform and an initialised data directory, all with the real kbsctl
// and kbs. It does not start the broker.
func newWorld(t *testing.T) *world {
	t.Helper()
	requireE2E(t)
	dir := t.TempDir()
	w := &world{
		t: t, dir: dir,
		certs:  filepath.Join(dir, "certs"),
		tdxsim: filepath.Join(dir, "tdxsim"),
		data:   filepath.Join(dir, "data"),
	}
	w.must(w.kbsctl("dev", "certs", w.certs, "--trust-domain", trustDomain, "--id", "kbs", "--id", "loader", "--id", "admin"))
	w.must(w.kbsctl("dev", "certs", w.certs, "--id", "intruder"))
	w.must(w.kbsctl("dev", "tdxsim", "init", w.tdxsim))
	w.mrtd = tdMRTD(t, w.tdxsim)
	w.must(runCmd(t, dir, cleanEnv(), w.bin("kbs"), "init", "--data-dir", w.data))
	return w
}

func (w *world) bin(name string) string { return filepath.Join(binDir, name) }

// id is the SPIFFE ID of a workload name in the test trust domain.
func id(name string) string { return "spiffe://" + trustDomain + "/" + name }

// must fails the test unless r exited 0, and returns r.
func (w *world) must(r result) result {
	w.t.Helper()
	if r.code != 0 {
		w.t.Fatalf("command failed:\n%s", r)
	}
	return r
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startKBS runs kbs serve with --dev-insecure-simulated-tdx, its gRPC
// server on listen ("127.0.0.1:0" for any free port), health and metrics on
// free ports, and waits for its "kbs serving" log line.
func (w *world) startKBS(listen string) {
	t := w.t
	t.Helper()
	if w.kbs != nil && !w.kbs.exited() {
		t.Fatal("kbs is already running")
	}
	w.starts++
	logPath := filepath.Join(w.dir, "kbs-"+strconv.Itoa(w.starts)+".log")
	w.kbs = startProc(t, "kbs", w.dir, logPath, cleanEnv(), w.bin("kbs"), "serve",
		"--data-dir", w.data,
		"--listen", listen, "--health-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--svid-cert", filepath.Join(w.certs, "kbs.pem"), "--svid-key", filepath.Join(w.certs, "kbs-key.pem"),
		"--bundle", filepath.Join(w.certs, "ca.pem"),
		"--admin-ids", id("admin"),
		"--dev-insecure-simulated-tdx", w.tdxsim)
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, line := range logLines(logPath) {
			if line["msg"] == "kbs serving" {
				addr, _ := line["grpc"].(string)
				if addr == "" {
					t.Fatalf("kbs serving line without a grpc address: %v", line)
				}
				w.addr = addr
				return
			}
		}
		if w.kbs.exited() {
			t.Fatalf("kbs exited before serving (%v); log:\n%s", w.kbs.err, tail(logPath, 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("kbs not serving after 20s; log:\n%s", tail(logPath, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopKBS stops the broker with SIGTERM and checks it exited 0.
func (w *world) stopKBS() {
	w.t.Helper()
	if err := w.kbs.stop(); err != nil {
		w.t.Fatalf("kbs: %v", err)
	}
	if code := exitCode(w.kbs.cmd.ProcessState); code != 0 {
		w.t.Fatalf("kbs exited with code %d after SIGTERM; log:\n%s", code, tail(w.kbs.log, 30))
	}
}

// kbsctl runs kbsctl as the admin, connected to the running broker (if any)
// through the CML_* environment.
func (w *world) kbsctl(args ...string) result {
	w.t.Helper()
	env := cleanEnv(
		"CML_KBS="+w.addr, "CML_KBS_SPIFFE_ID="+id("kbs"), "CML_BUNDLE="+filepath.Join(w.certs, "ca.pem"),
		"CML_SVID_CERT="+filepath.Join(w.certs, "admin.pem"), "CML_SVID_KEY="+filepath.Join(w.certs, "admin-key.pem"))
	return runCmd(w.t, w.dir, env, w.bin("kbsctl"), args...)
}

// createKey creates key in the broker with the demo's policy: the loader's
// SPIFFE ID in a TD with the simulator's default MRTD.
func (w *world) createKey(key string) {
	w.t.Helper()
	w.must(w.kbsctl("key", "create", key))
	policy := filepath.Join(w.dir, key+".policy.json")
	writeFile(w.t, policy, `{"spiffe_ids": ["`+id("loader")+`"], "mrtd": ["`+w.mrtd+`"]}`)
	w.must(w.kbsctl("policy", "put", "--key", key, "--file", policy))
}

// encrypt encrypts the model at in with key through the broker (ExportKey).
func (w *world) encrypt(key, in, out string, extra ...string) {
	w.t.Helper()
	args := append([]string{"model", "encrypt", "--kbs", w.addr, "--key-id", key, "--in", in, "--out", out, "--quiet"}, extra...)
	w.must(w.kbsctl(args...))
}

// loaderOpts varies a loader run from the demo's.
type loaderOpts struct {
	identity string   // SVID name; default "loader"
	tdxsim   string   // simulator directory; default the world's
	addr     string   // broker address; default the running broker's
	extra    []string // more flags
}

func (w *world) loaderArgs(key, src, dst string, o loaderOpts) []string {
	if o.identity == "" {
		o.identity = "loader"
	}
	if o.tdxsim == "" {
		o.tdxsim = w.tdxsim
	}
	if o.addr == "" {
		o.addr = w.addr
	}
	args := []string{
		"--kbs", o.addr, "--kbs-spiffe-id", id("kbs"),
		"--key", key, "--src", src, "--dst", dst,
		"--svid-cert", filepath.Join(w.certs, o.identity+".pem"),
		"--svid-key", filepath.Join(w.certs, o.identity+"-key.pem"),
		"--bundle", filepath.Join(w.certs, "ca.pem"),
		"--quote-provider", "simulated", "--dev-insecure-simulated-tdx", o.tdxsim,
		"--timeout", "30s",
	}
	return append(args, o.extra...)
}

// loaderRun is a finished cml-loader with its JSON log lines.
type loaderRun struct {
	result
	lines []map[string]any
}

// field is the value of name in the last log line that has it ("" if none).
func (r loaderRun) field(name string) string {
	for i := len(r.lines) - 1; i >= 0; i-- {
		if v, ok := r.lines[i][name]; ok {
			switch v := v.(type) {
			case string:
				return v
			case float64:
				return strconv.FormatFloat(v, 'f', -1, 64)
			default:
				b, _ := json.Marshal(v)
				return string(b)
			}
		}
	}
	return ""
}

// runLoader runs cml-loader in the foreground.
func (w *world) runLoader(key, src, dst string, o loaderOpts) loaderRun {
	w.t.Helper()
	r := runCmd(w.t, w.dir, cleanEnv(), w.bin("cml-loader"), w.loaderArgs(key, src, dst, o)...)
	return loaderRun{result: r, lines: parseLines(r.stderr)}
}

// startLoader runs cml-loader in the background, its log in logPath.
func (w *world) startLoader(key, src, dst, logPath string, o loaderOpts) *proc {
	w.t.Helper()
	return startProc(w.t, "cml-loader", w.dir, logPath, cleanEnv(), w.bin("cml-loader"), w.loaderArgs(key, src, dst, o)...)
}

// wantLoaded checks a successful run: exit 0, the summary line, and the
// model at dst file for file.
func (w *world) wantLoaded(r loaderRun, key string, version int, dst string, want map[string]string) {
	w.t.Helper()
	if r.code != 0 {
		w.t.Fatalf("loader failed:\n%s", r.result)
	}
	if got := r.field("msg"); got != "model decrypted" {
		w.t.Errorf("last log line msg = %q, want the summary \"model decrypted\"\n%s", got, r.stderr)
	}
	if got := r.field("key"); got != key {
		w.t.Errorf("summary key = %q, want %q", got, key)
	}
	if got := r.field("key_version"); got != strconv.Itoa(version) {
		w.t.Errorf("summary key_version = %s, want %d", got, version)
	}
	if got := r.field("files"); got != strconv.Itoa(len(want)) {
		w.t.Errorf("summary files = %s, want %d", got, len(want))
	}
	if r.field("request_id") == "" {
		w.t.Errorf("summary without a request_id:\n%s", r.stderr)
	}
	checkModel(w.t, dst, want)
}

// wantDenied checks a denial: exit 3, the reason code and a request id in
// the error line, and nothing at dst.
func (w *world) wantDenied(r loaderRun, reason, dst string) {
	w.t.Helper()
	if r.code != 3 {
		w.t.Fatalf("loader exit code %d, want 3 (denied: %s)\n%s", r.code, reason, r.result)
	}
	if got := r.field("reason"); got != reason {
		w.t.Errorf("reason = %q, want %q\n%s", got, reason, r.stderr)
	}
	if r.field("request_id") == "" {
		w.t.Errorf("denial without a request_id:\n%s", r.stderr)
	}
	if got := r.field("exit_code"); got != "3" {
		w.t.Errorf("exit_code in the log line = %q, want 3", got)
	}
	wantAbsent(w.t, dst)
	wantNoPartial(w.t, filepath.Dir(dst))
}

// otherTD copies the simulator to a new directory whose default TD has
// mrtd: the same platform and PCK running another TD image.
func (w *world) otherTD(name, mrtd string) string {
	w.t.Helper()
	dir := filepath.Join(w.dir, name)
	copyTree(w.t, w.tdxsim, dir)
	cfg := filepath.Join(dir, "tdxsim.json")
	b, err := os.ReadFile(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	changed := strings.Replace(string(b), `"mrtd": "`+w.mrtd+`"`, `"mrtd": "`+mrtd+`"`, 1)
	if changed == string(b) {
		w.t.Fatalf("no \"mrtd\": %q in %s", w.mrtd, cfg)
	}
	writeFile(w.t, cfg, changed)
	if got := tdMRTD(w.t, dir); got != mrtd {
		w.t.Fatalf("MRTD of %s = %s, want %s", dir, got, mrtd)
	}
	return dir
}

// sha384hex is the SHA-384 of s in hex: a plausible measurement.
func sha384hex(s string) string {
	h := sha512.Sum384([]byte(s))
	return hex.EncodeToString(h[:])
}

// tdMRTD reads the default TD's MRTD from a simulator directory.
func tdMRTD(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "tdxsim.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		TD struct {
			MRTD string `json:"mrtd"`
		} `json:"td"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s/tdxsim.json: %v", dir, err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{96}$`).MatchString(cfg.TD.MRTD) {
		t.Fatalf("%s/tdxsim.json: td.mrtd %q is not 96 hex digits", dir, cfg.TD.MRTD)
	}
	return cfg.TD.MRTD
}

// parseLines decodes the JSON lines of a log; other lines are skipped.
func parseLines(s string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func logLines(path string) []map[string]any {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return parseLines(string(b))
}

// writeModel writes a directory model of the given files (name -> size) of
// seeded pseudo-random bytes and returns name -> SHA-256 hex.
func writeModel(t *testing.T, dir string, seed uint64, files map[string]int64) map[string]string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sums := make(map[string]string, len(files))
	var s [32]byte
	for name, size := range files {
		seed++
		for i := range 8 {
			s[i] = byte(seed >> (8 * i))
		}
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8(s), size); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		sums[name] = hex.EncodeToString(h.Sum(nil))
	}
	return sums
}

// checkModel checks that dir holds exactly the files in want (relative
// name -> SHA-256 hex), with those contents.
func checkModel(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if !d.Type().IsRegular() {
			t.Errorf("%s: not a regular file (%v)", rel, d.Type())
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		got[rel] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatalf("read the model at %s: %v", dir, err)
	}
	for name, sum := range want {
		switch g, ok := got[name]; {
		case !ok:
			t.Errorf("%s: missing from %s", name, dir)
		case g != sum:
			t.Errorf("%s: SHA-256 %s, want %s (the original's)", name, g, sum)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: in %s but not in the model", name, dir)
		}
	}
}

func wantAbsent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s exists (err %v); a failed loader must write nothing there", path, err)
	}
}

// wantNoPartial checks that dir holds no leftover of a loader run.
func wantNoPartial(t *testing.T, dir string) {
	t.Helper()
	if p := partials(t, dir); len(p) > 0 {
		t.Errorf("leftover partial output in %s: %v", dir, p)
	}
}

// partials lists the loader's temporary outputs in dir.
func partials(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if strings.Contains(de.Name(), ".emdl-partial-") || de.Name() == ".cml-loader-staging" {
			out = append(out, de.Name())
		}
	}
	sort.Strings(out)
	return out
}

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies the regular files and directories under src to dst,
// keeping their modes.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

// flipBit flips the lowest bit of the byte at the middle of the file.
func flipBit(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
