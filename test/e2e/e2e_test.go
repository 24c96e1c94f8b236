package e2e

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The demo's model: a config, a tokenizer and two weight shards, ~50 MiB.
var demoModel = map[string]int64{
	"config.json":                      86,
	"tokenizer.json":                   2 << 20,
	"model-00001-of-00002.safetensors": 24 << 20,
	"model-00002-of-00002.safetensors": 24 << 20,
}

// A small model for the scenarios that are not about size.
var smallModel = map[string]int64{
	"config.json":   512,
	"weights-1.bin": 3 << 20,
	"weights-2.bin": 3<<20 + 12345,
}

// killModel is large enough that decryption takes a while on any machine,
// so the loader can be killed after its first plaintext bytes appear.
var killModel = map[string]int64{
	"model-00001-of-00002.safetensors": 160 << 20,
	"model-00002-of-00002.safetensors": 160 << 20,
}

// auditRecord is the part of an AuditRecord (audit list --json) checked here.
type auditRecord struct {
	RequestID    string            `json:"request_id"`
	Caller       string            `json:"caller_spiffe_id"`
	Operation    string            `json:"operation"`
	KeyID        string            `json:"key_id"`
	KeyVersion   int               `json:"key_version"`
	Decision     string            `json:"decision"`
	ReasonCodes  []string          `json:"reason_codes"`
	Simulated    bool              `json:"simulated"`
	Measurements map[string]string `json:"measurements"`
}

func (w *world) auditRecords() []auditRecord {
	w.t.Helper()
	r := w.must(w.kbsctl("audit", "list", "--json"))
	var out struct {
		Records []auditRecord `json:"records"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		w.t.Fatalf("audit list --json: %v\n%s", err, r.stdout)
	}
	return out.Records
}

// byRequestID finds the audit record of a request.
func byRequestID(t *testing.T, recs []auditRecord, reqID string) auditRecord {
	t.Helper()
	for _, r := range recs {
		if r.RequestID == reqID {
			return r
		}
	}
	t.Fatalf("no audit record with request id %q among %d records", reqID, len(recs))
	return auditRecord{}
}

// TestDemoFlow is scripts/demo.sh step for step: key and pinned policy,
// encryption through the broker, a release to the loader and a byte-exact
// model, a TD with another MRTD and a workload with another SPIFFE ID
// denied, every decision in the audit log, and the log's chain intact.
func TestDemoFlow(t *testing.T) {
	w := newWorld(t)
	w.startKBS("127.0.0.1:0")
	const key = "demo-llama"
	w.createKey(key)

	model := filepath.Join(w.dir, "llama-demo")
	want := writeModel(t, model, 1, demoModel)
	enc := filepath.Join(w.dir, "llama-demo.emdl")
	w.encrypt(key, model, enc)
	insp := w.must(w.kbsctl("model", "inspect", enc))
	for _, line := range []string{"key id:       " + key, "key version:  1", "directory, 4 files"} {
		if !strings.Contains(insp.stdout, line) {
			t.Errorf("model inspect: no %q in\n%s", line, insp.stdout)
		}
	}
	models := filepath.Join(w.dir, "models")
	if err := os.Mkdir(models, 0o755); err != nil {
		t.Fatal(err)
	}

	ok := w.runLoader(key, enc, filepath.Join(models, "llama-demo"), loaderOpts{})
	w.wantLoaded(ok, key, 1, filepath.Join(models, "llama-demo"), want)

	otherMRTD := sha384hex("another TD image")
	other := w.otherTD("tdxsim-other", otherMRTD)
	mrtdDenied := w.runLoader(key, enc, filepath.Join(models, "other-td"), loaderOpts{tdxsim: other})
	w.wantDenied(mrtdDenied, "mrtd_not_allowed", filepath.Join(models, "other-td"))

	intruder := w.runLoader(key, enc, filepath.Join(models, "intruder"), loaderOpts{identity: "intruder"})
	w.wantDenied(intruder, "spiffe_id_not_allowed", filepath.Join(models, "intruder"))

	// The same denial as a dry run, with a quote from kbsctl dev tdxsim quote.
	quote := filepath.Join(w.dir, "other.quote")
	w.must(w.kbsctl("dev", "tdxsim", "quote", "--dir", w.tdxsim, "--out", quote, "--mrtd", otherMRTD))
	pt := w.kbsctl("policy", "test", "--key", key, "--quote", quote, "--spiffe-id", id("loader"))
	if pt.code != 3 || !regexp.MustCompile(`(?m)^FAIL +mrtd +mrtd_not_allowed$`).MatchString(pt.stdout) ||
		!strings.Contains(pt.stdout, "decision: DENY (mrtd_not_allowed)") {
		t.Errorf("policy test of a quote with another MRTD: want exit 3 and a failed mrtd check\n%s", pt)
	}

	recs := w.auditRecords()
	rel := byRequestID(t, recs, ok.field("request_id"))
	if rel.Operation != "ReleaseKey" || rel.Caller != id("loader") || rel.Decision != "DECISION_ALLOW" ||
		rel.KeyID != key || rel.KeyVersion != 1 || !rel.Simulated || rel.Measurements["mrtd"] != w.mrtd {
		t.Errorf("audit record of the release: %+v", rel)
	}
	den := byRequestID(t, recs, mrtdDenied.field("request_id"))
	if den.Operation != "ReleaseKey" || den.Caller != id("loader") || den.Decision != "DECISION_DENY" ||
		!slices.Contains(den.ReasonCodes, "mrtd_not_allowed") || den.Measurements["mrtd"] != otherMRTD {
		t.Errorf("audit record of the MRTD denial: %+v", den)
	}
	intr := byRequestID(t, recs, intruder.field("request_id"))
	if intr.Caller != id("intruder") || intr.Decision != "DECISION_DENY" || !slices.Contains(intr.ReasonCodes, "spiffe_id_not_allowed") {
		t.Errorf("audit record of the intruder's denial: %+v", intr)
	}
	v := w.must(w.kbsctl("audit", "verify"))
	if !strings.HasPrefix(v.stdout, "audit log OK: ") {
		t.Errorf("audit verify:\n%s", v)
	}
}

// TestLoaderBeforeBroker starts the loader while nothing listens at the
// broker's address; it retries and succeeds once the broker is up.
func TestLoaderBeforeBroker(t *testing.T) {
	w := newWorld(t)
	addr := freePort(t)
	w.startKBS(addr)
	const key = "late-broker"
	w.createKey(key)
	want := writeModel(t, filepath.Join(w.dir, "model"), 2, smallModel)
	enc := filepath.Join(w.dir, "model.emdl")
	w.encrypt(key, filepath.Join(w.dir, "model"), enc)
	w.stopKBS()

	dst := filepath.Join(w.dir, "model.out")
	logPath := filepath.Join(w.dir, "loader.log")
	lp := w.startLoader(key, enc, dst, logPath, loaderOpts{addr: addr})
	const down = 1500 * time.Millisecond
	time.Sleep(down)
	if lp.exited() {
		t.Fatalf("the loader exited (code %d) while the broker was down; log:\n%s", exitCode(lp.cmd.ProcessState), tail(logPath, 20))
	}
	wantAbsent(t, dst)
	w.startKBS(addr)
	if code := lp.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("loader exit code %d after the broker came up; log:\n%s", code, tail(logPath, 20))
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	r := loaderRun{result: result{stderr: string(b)}, lines: parseLines(string(b))}
	w.wantLoaded(r, key, 1, dst, want)
	// attestation_ms covers the retries: it must include the time the broker was down.
	if ms, _ := strconv.Atoi(r.field("attestation_ms")); ms < int(down/time.Millisecond) {
		t.Errorf("attestation_ms = %d, want at least the %v the broker was down", ms, down)
	}
}

// TestLoaderKilledMidDecrypt kills the loader with SIGKILL once its first
// plaintext bytes are on disk, for both --dst forms: nothing partial is
// visible as the model, and a rerun succeeds and clears the leftovers.
func TestLoaderKilledMidDecrypt(t *testing.T) {
	w := newWorld(t)
	w.startKBS("127.0.0.1:0")
	const key = "killed"
	w.createKey(key)
	model := filepath.Join(w.dir, "big")
	want := writeModel(t, model, 3, killModel)
	enc := filepath.Join(w.dir, "big.emdl")
	w.encrypt(key, model, enc)
	if err := os.RemoveAll(model); err != nil { // room in the temp dir
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		dst  func(mount string) string // --dst given the emptyDir mount
	}{
		{"absent path", func(m string) string { return filepath.Join(m, "llama") }},
		{"empty mount point", func(m string) string { return m }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := *w
			w.t = t
			mount := filepath.Join(t.TempDir(), "models")
			if err := os.Mkdir(mount, 0o755); err != nil {
				t.Fatal(err)
			}
			dst := tc.dst(mount)
			logPath := filepath.Join(t.TempDir(), "loader.log")
			lp := w.startLoader(key, enc, dst, logPath, loaderOpts{})
			// The partial goes beside an absent --dst, or into a staging directory in the mount.
			seen := waitForPlaintext(t, lp, mount, logPath)
			if err := lp.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			if code := lp.wait(t, 10*time.Second); code != -1 {
				t.Fatalf("loader exit code %d, want killed by SIGKILL", code)
			}
			t.Logf("killed the loader after %s held %d bytes", seen.path, seen.size)

			if dst != mount {
				// Nothing at --dst; the partial, hidden beside it, is left for the next run.
				wantAbsent(t, dst)
				if p := partials(t, mount); len(p) != 1 {
					t.Errorf("entries beside --dst after the kill: %v, want one partial", entries(t, mount))
				}
			} else {
				// Only the staging directory: no model file at --dst's top level.
				if got := entries(t, mount); !slices.Equal(got, []string{".cml-loader-staging"}) {
					t.Errorf("--dst after the kill holds %v, want only .cml-loader-staging", got)
				}
			}

			r := w.runLoader(key, enc, dst, loaderOpts{})
			w.wantLoaded(r, key, 1, dst, want)
			wantNoPartial(t, mount)
			if dst != mount {
				if got := entries(t, mount); !slices.Equal(got, []string{"llama"}) {
					t.Errorf("after the rerun the mount holds %v, want only llama", got)
				}
			}
		})
	}
}

type seenFile struct {
	path string
	size int64
}

// waitForPlaintext polls dir until a loader partial or staging directory in
// it holds a non-empty file, and returns it. It fails the test if the
// loader ends first.
func waitForPlaintext(t *testing.T, lp *proc, dir, logPath string) seenFile {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range partials(t, dir) {
			var found seenFile
			filepath.WalkDir(filepath.Join(dir, p), func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil
				}
				if info, err := d.Info(); err == nil && info.Mode().IsRegular() && info.Size() > 0 {
					found = seenFile{path, info.Size()}
					return fs.SkipAll
				}
				return nil
			})
			if found.size > 0 {
				return found
			}
		}
		if lp.exited() {
			t.Fatalf("the loader ended (code %d) before any partial plaintext was seen; a larger killModel is needed on this machine; log:\n%s",
				exitCode(lp.cmd.ProcessState), tail(logPath, 20))
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("no partial plaintext in %s after 60s; log:\n%s", dir, tail(logPath, 20))
	return seenFile{}
}

// TestTamperedModel flips one bit of an encrypted weight file: the loader
// gets the key, refuses the model with exit 5, names the file, and writes
// nothing.
func TestTamperedModel(t *testing.T) {
	w := newWorld(t)
	w.startKBS("127.0.0.1:0")
	const key = "tampered"
	w.createKey(key)
	want := writeModel(t, filepath.Join(w.dir, "model"), 4, smallModel)
	enc := filepath.Join(w.dir, "model.emdl")
	w.encrypt(key, filepath.Join(w.dir, "model"), enc)
	bad := filepath.Join(w.dir, "tampered.emdl")
	copyTree(t, enc, bad)
	flipBit(t, filepath.Join(bad, "weights-2.bin"))

	models := filepath.Join(w.dir, "models")
	if err := os.Mkdir(models, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(models, "m")
	r := w.runLoader(key, bad, dst, loaderOpts{})
	if r.code != 5 {
		t.Fatalf("loader exit code %d for a tampered model, want 5\n%s", r.code, r.result)
	}
	if e := r.field("error"); !strings.Contains(e, "weights-2.bin") {
		t.Errorf("error %q does not name the tampered file weights-2.bin", e)
	}
	if got := r.field("exit_code"); got != "5" {
		t.Errorf("exit_code in the log line = %q, want 5", got)
	}
	wantAbsent(t, dst)
	wantNoPartial(t, models)

	// The same key and the untouched model: the refusal was the flipped bit.
	w.wantLoaded(w.runLoader(key, enc, dst, loaderOpts{}), key, 1, dst, want)
}

// TestKeyRotation loads a model encrypted under version 1 after rotation
// to version 2, and one under version 2; once version 1 is destroyed, its
// model is denied and version 2's still loads.
func TestKeyRotation(t *testing.T) {
	w := newWorld(t)
	w.startKBS("127.0.0.1:0")
	const key = "rotated"
	w.createKey(key)
	want := writeModel(t, filepath.Join(w.dir, "model"), 5, smallModel)
	v1 := filepath.Join(w.dir, "v1.emdl")
	w.encrypt(key, filepath.Join(w.dir, "model"), v1)
	rot := w.must(w.kbsctl("key", "rotate", key))
	if !strings.Contains(rot.stdout, "version 2 is now primary") {
		t.Errorf("key rotate:\n%s", rot)
	}
	v2 := filepath.Join(w.dir, "v2.emdl")
	w.encrypt(key, filepath.Join(w.dir, "model"), v2)
	if insp := w.must(w.kbsctl("model", "inspect", v2)); !strings.Contains(insp.stdout, "key version:  2") {
		t.Errorf("a model encrypted after the rotation:\n%s", insp.stdout)
	}

	w.wantLoaded(w.runLoader(key, v1, filepath.Join(w.dir, "out-v1"), loaderOpts{}), key, 1, filepath.Join(w.dir, "out-v1"), want)
	w.wantLoaded(w.runLoader(key, v2, filepath.Join(w.dir, "out-v2"), loaderOpts{}), key, 2, filepath.Join(w.dir, "out-v2"), want)

	w.must(w.kbsctl("key", "destroy", key, "--version", "1", "--yes"))
	w.wantDenied(w.runLoader(key, v1, filepath.Join(w.dir, "out-v1-destroyed"), loaderOpts{}), "key_destroyed", filepath.Join(w.dir, "out-v1-destroyed"))
	w.wantLoaded(w.runLoader(key, v2, filepath.Join(w.dir, "out-v2-again"), loaderOpts{}), key, 2, filepath.Join(w.dir, "out-v2-again"), want)
}

// TestDestroyedKey: after 'kbsctl key destroy' the loader is denied with
// key_destroyed (exit 3) and writes nothing.
func TestDestroyedKey(t *testing.T) {
	w := newWorld(t)
	w.startKBS("127.0.0.1:0")
	const key = "shredded"
	w.createKey(key)
	want := writeModel(t, filepath.Join(w.dir, "model"), 6, smallModel)
	enc := filepath.Join(w.dir, "model.emdl")
	w.encrypt(key, filepath.Join(w.dir, "model"), enc)
	w.wantLoaded(w.runLoader(key, enc, filepath.Join(w.dir, "before"), loaderOpts{}), key, 1, filepath.Join(w.dir, "before"), want)

	w.must(w.kbsctl("key", "destroy", key, "--yes"))
	r := w.runLoader(key, enc, filepath.Join(w.dir, "after"), loaderOpts{})
	w.wantDenied(r, "key_destroyed", filepath.Join(w.dir, "after"))
	rec := byRequestID(t, w.auditRecords(), r.field("request_id"))
	if rec.Operation != "ReleaseKey" || rec.Decision != "DECISION_DENY" || !slices.Contains(rec.ReasonCodes, "key_destroyed") {
		t.Errorf("audit record of the denial: %+v", rec)
	}
}

// TestDemoScript runs scripts/demo.sh (make demo) against the binaries
// TestMain built, and checks its exit status, its key lines, and that it
// left neither its kbs nor its working directory behind.
func TestDemoScript(t *testing.T) {
	requireE2E(t)
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("scripts/demo.sh needs bash")
	}
	tmp := t.TempDir()
	start := time.Now()
	r := runCmd(t, repoRoot, cleanEnv("CML_BIN_DIR="+binDir, "TMPDIR="+tmp, "DEMO_KEEP=0"),
		filepath.Join(repoRoot, "scripts", "demo.sh"))
	if r.code != 0 {
		t.Fatalf("scripts/demo.sh failed:\n%s", r)
	}
	t.Logf("scripts/demo.sh ran in %v", time.Since(start).Round(time.Millisecond))
	for _, want := range []string{
		"== 1. Identities",
		"$ kbsctl dev certs certs --trust-domain demo.example --id kbs --id loader --id admin",
		"$ kbsctl policy put --key demo-llama --file policy.json",
		"$ kbsctl model encrypt --kbs 127.0.0.1:",
		"-> exit 0: 4 files, 52428886 bytes decrypted into models/llama-demo",
		"model-00001-of-00002.safetensors: OK",
		"-> exit 3, denied: mrtd_not_allowed",
		"-> exit 3, denied: spiffe_id_not_allowed",
		"audit log OK: ",
		"== Done in ",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if n := strings.Count(r.stdout, ": OK\n"); n != 4 {
		t.Errorf("demo output has %d sha256sum OK lines, want 4", n)
	}
	if m := regexp.MustCompile(`kbs \(pid (\d+)\)`).FindStringSubmatch(r.stdout); m == nil {
		t.Errorf("demo output does not name kbs's pid")
	} else if comm, err := os.ReadFile("/proc/" + m[1] + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "kbs" {
		t.Errorf("the demo's kbs (pid %s) is still running", m[1])
	}
	if left := entries(t, tmp); len(left) > 0 {
		t.Errorf("the demo left %v in its TMPDIR", left)
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", r.stdout)
	}
}
