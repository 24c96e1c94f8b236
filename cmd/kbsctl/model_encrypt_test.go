package main

import (
	"bytes"
	"context"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// newKey runs keygen into a temp dir and returns the key file's path.
func newKey(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.key")
	if r := kbsctl(t, "model", "keygen", path); r.code != exitOK {
		t.Fatalf("keygen: %v", r)
	}
	return path
}

// pseudoRandom returns n deterministic pseudo-random bytes.
func pseudoRandom(seed uint64, n int) []byte {
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	rng.Read(b)
	return b
}

// newModelDir writes a small directory model (nested, with an empty file)
// and returns its path.
func newModelDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	files := map[string][]byte{
		"config.json":                     []byte(`{"architectures":["LlamaForCausalLM"]}` + "\n"),
		"tokenizer.json":                  pseudoRandom(1, 10_000),
		"weights/model-00001.safetensors": pseudoRandom(2, 300_000),
		"weights/model-00002.safetensors": pseudoRandom(3, 123_457),
		"empty.txt":                       nil,
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// readTree maps every regular file under root (by relative path) to its
// content.
func readTree(t *testing.T, root string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		data, err := os.ReadFile(p)
		tree[rel] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func sameTree(t *testing.T, want, got string) {
	t.Helper()
	w, g := readTree(t, want), readTree(t, got)
	if len(w) != len(g) {
		t.Fatalf("%s has %d files, %s has %d", want, len(w), got, len(g))
	}
	for name, data := range w {
		if g[name] != data {
			t.Errorf("%s differs after the round trip", name)
		}
	}
}

var summaryLine = regexp.MustCompile(`^(en|de)crypted (\d+) files?, (\d+) bytes in \d+\.\d\d s \(\d+\.\d MB/s\): \S+ -> \S+\n$`)

func TestModelEncryptDecryptDir(t *testing.T) {
	key := newKey(t)
	model := newModelDir(t)
	enc := filepath.Join(t.TempDir(), "model.emdl")
	out := filepath.Join(t.TempDir(), "plain")

	r := kbsctl(t, "model", "encrypt", "--key-file", key, "--key-id", "llama-3-8b", "--key-version", "7",
		"--chunk-size", "64KiB", "--workers", "3", "--in", model, "--out", enc)
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("encrypt: %v", r)
	}
	m := summaryLine.FindStringSubmatch(r.stdout)
	if m == nil || m[2] != "5" || m[3] != "433496" || !strings.HasSuffix(r.stdout, model+" -> "+enc+"\n") {
		t.Errorf("encrypt summary: %q", r.stdout)
	}
	ciphertext := readTree(t, enc)
	for name, data := range ciphertext {
		if strings.Contains(data, `"LlamaForCausalLM"`) {
			t.Errorf("%s holds plaintext", name)
		}
	}

	r = kbsctl(t, "model", "decrypt", "--key-file", key, "--in", enc, "--out", out, "--key-id", "llama-3-8b", "--key-version", "7")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("decrypt: %v", r)
	}
	if m := summaryLine.FindStringSubmatch(r.stdout); m == nil || m[2] != "5" || m[3] != "433496" {
		t.Errorf("decrypt summary: %q", r.stdout)
	}
	sameTree(t, model, out)
}

func TestModelEncryptDecryptFile(t *testing.T) {
	key := newKey(t)
	src := filepath.Join(t.TempDir(), "model.gguf")
	plain := pseudoRandom(9, 1<<20+17)
	if err := os.WriteFile(src, plain, 0o644); err != nil {
		t.Fatal(err)
	}
	enc := filepath.Join(t.TempDir(), "model.emdl")
	// An existing empty directory is an acceptable --out.
	if err := os.Mkdir(enc, 0o755); err != nil {
		t.Fatal(err)
	}
	if r := kbsctl(t, "model", "encrypt", "--quiet", "--key-file", key, "--key-id", "m", "--in", src, "--out", enc); r.code != exitOK {
		t.Fatalf("encrypt: %v", r)
	} else if m := summaryLine.FindStringSubmatch(r.stdout); m == nil || m[2] != "1" || !strings.Contains(r.stdout, "1 file,") {
		t.Errorf("encrypt summary: %q", r.stdout)
	}
	out := filepath.Join(t.TempDir(), "model.gguf")
	if r := kbsctl(t, "model", "decrypt", "--quiet", "--key-file", key, "--in", enc, "--out", out); r.code != exitOK {
		t.Fatalf("decrypt: %v", r)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("round trip of a single file: %d bytes, %v", len(got), err)
	}
}

func TestModelEncryptErrors(t *testing.T) {
	key := newKey(t)
	model := newModelDir(t)
	tmp := t.TempDir()
	out := filepath.Join(tmp, "out")
	notKey := filepath.Join(tmp, "not.key")
	writeFile(t, notKey, "my secret passphrase\n", 0o600)
	full := filepath.Join(tmp, "full")
	if err := os.MkdirAll(filepath.Join(full, "x"), 0o755); err != nil {
		t.Fatal(err)
	}

	empty := filepath.Join(tmp, "empty")
	if err := os.Mkdir(empty, 0o750); err != nil {
		t.Fatal(err)
	}
	base := []string{"model", "encrypt", "--key-file", key, "--key-id", "k", "--in", model}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"model", "encrypt", "--key-id", "k", "--in", model, "--out", out}, exitUsage, "encrypt: give --kbs ADDR (the key broker holds the key) or --key-file FILE"},
		{[]string{"model", "encrypt", "--key-file", key, "--kbs", "localhost:1", "--key-id", "k", "--in", model, "--out", out}, exitUsage, "encrypt: --key-file and --kbs are two key sources; give one"},
		{[]string{"model", "encrypt", "--key-file", key, "--kbs-spiffe-id", "spiffe://x/kbs", "--key-id", "k", "--in", model, "--out", out}, exitUsage, "encrypt: --kbs-spiffe-id is a key broker flag; it needs --kbs instead of --key-file"},
		{[]string{"model", "encrypt", "--key-file", key, "--in", model, "--out", out}, exitUsage, "encrypt: --key-id is required"},
		{[]string{"model", "encrypt", "--key-file", key, "--key-id", "k", "--out", out}, exitUsage, "encrypt: --in is required"},
		{base, exitUsage, "encrypt: --out is required"},
		{append(base, "--out", out, "--key-version", "0"), exitUsage, "--key-version must be at least 1"},
		{append(base, "--out", out, "--key-version", "4294967296"), exitUsage, "--key-version 4294967296 is out of range"},
		{append(base, "--out", out, "--workers", "-1"), exitUsage, "--workers -1"},
		{append(base, "--out", out, "--chunk-size", "4GiB"), exitUsage, "--chunk-size 4GiB is too large"},
		{[]string{"model", "encrypt", "--key-file", notKey, "--key-id", "k", "--in", model, "--out", out}, exitFailure, "--key-file " + notKey + ": not a key: character 1 is not a hex digit"},
		{append(base, "--out", full), exitFailure, full},
		{[]string{"model", "encrypt", "--key-file", key, "--key-id", "k", "--in", filepath.Join(tmp, "nope"), "--out", out}, exitFailure, filepath.Join(tmp, "nope")},
		{append(base, "--out", filepath.Join(model, "inside")), exitFailure, "output is inside the input; --in must hold only regular files and directories, and --out must be outside --in"},
		{[]string{"model", "encrypt", "--key-file", key, "--key-id", "bad id", "--in", model, "--out", out}, exitFailure, `key id "bad id": must match`},
		{[]string{"model", "encrypt", "--key-file", key, "--key-id", "k", "--in", model, "--out", empty, "--chunk-size", "16"}, exitFailure, "chunk size 16 outside"},
	} {
		r := kbsctl(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("kbsctl %q: want exit %d and %q: %v", tc.args, tc.code, tc.msg, r)
		}
		if strings.Contains(r.stderr, "passphrase") {
			t.Errorf("kbsctl %q: key file content in the error: %s", tc.args, r.stderr)
		}
	}
	if _, err := os.Lstat(out); err == nil {
		t.Error("a failed encrypt left output behind")
	}
	if tree := readTree(t, full); len(tree) != 0 {
		t.Errorf("encrypt wrote into a non-empty --out: %v", tree)
	}
	// A failed encrypt into an empty directory leaves it as it was.
	if fi, err := os.Stat(empty); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 || !isEmptyDir(empty) {
		t.Errorf("empty --out after a failed encrypt: %v, %v", fi, err)
	}

	// Symlinks in the input are refused.
	if err := os.Symlink("/etc/passwd", filepath.Join(model, "passwd")); err != nil {
		t.Fatal(err)
	}
	r := kbsctl(t, append(base, "--out", out)...)
	if r.code != exitFailure || !strings.Contains(r.stderr, "passwd: ") || !strings.Contains(r.stderr, "--in must hold only regular files") {
		t.Errorf("encrypt of a model with a symlink: %v", r)
	}
	if _, err := os.Lstat(out); err == nil {
		t.Error("a refused encrypt left output behind")
	}
}

func TestModelEncryptWarnsOnOpenKeyFile(t *testing.T) {
	key := newKey(t)
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "enc")
	r := kbsctl(t, "model", "encrypt", "--key-file", key, "--key-id", "k", "--in", newModelDir(t), "--out", out)
	if r.code != exitOK || !strings.Contains(r.stderr, "kbsctl: warning: key file "+key+" is readable by group or others (mode 0640)") {
		t.Errorf("encrypt with a 0640 key file: %v", r)
	}
}

func TestModelEncryptInterrupted(t *testing.T) {
	key := newKey(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out := filepath.Join(t.TempDir(), "enc")
	r := kbsctlEnv(ctx, &env{now: time.Now}, "model", "encrypt", "--key-file", key, "--key-id", "k", "--in", newModelDir(t), "--out", out)
	if r.code != exitInterrupted || !strings.Contains(r.stderr, "kbsctl: interrupted; nothing was written to "+out) {
		t.Errorf("cancelled encrypt: %v", r)
	}
	mustNotExist(t, out)
}

// listFiles returns every path under root, relative, sorted.
func listFiles(t *testing.T, root string) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		paths = append(paths, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

func TestModelEncryptKBS(t *testing.T) {
	b := startBroker(t)
	// Everything kbsctl could write to outside --out: a sandbox for the
	// model and the output, TMPDIR, and the working directory.
	sandbox := t.TempDir()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	cwd, _ := os.Getwd()
	cwdBefore := listFiles(t, cwd)
	model := filepath.Join(sandbox, "model")
	if err := os.CopyFS(model, os.DirFS(newModelDir(t))); err != nil {
		t.Fatal(err)
	}
	before := listFiles(t, sandbox)

	// The key does not exist: it is created, and version 1 is used.
	enc := filepath.Join(sandbox, "enc")
	r := b.run(t, "admin", "model", "encrypt", "--key-id", "llama", "--in", model, "--out", enc)
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("encrypt --kbs: %v", r)
	}
	for _, want := range []string{
		"created key llama in the key broker (version 1); it has no release policy yet",
		"using key llama version 1 from the key broker (export request id ",
		"encrypted 5 files, 433496 bytes in ",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	// No file besides the output, anywhere.
	after := listFiles(t, sandbox)
	var added []string
	for _, p := range after {
		if p != "enc" && !strings.HasPrefix(p, "enc"+string(filepath.Separator)) && !slices.Contains(before, p) {
			added = append(added, p)
		}
	}
	if len(added) != 0 {
		t.Errorf("encrypt --kbs wrote files besides --out: %q", added)
	}
	if got := listFiles(t, tmp); len(got) != 1 { // "." itself
		t.Errorf("encrypt --kbs wrote to TMPDIR: %q", got)
	}
	if got := listFiles(t, cwd); !slices.Equal(got, cwdBefore) {
		t.Errorf("encrypt --kbs wrote to the working directory")
	}
	// The model decrypts with the broker's key, exported in memory.
	sameTree(t, model, decryptWithExport(t, b, "llama", 1, enc))
	// The export is audited.
	if r := b.mustRun(t, "audit", "list", "--key", "llama"); !regexp.MustCompile(`(?m)^\d+ +\S+ +spiffe://example.org/admin +ExportKey +llama@1 +allow`).MatchString(r.stdout) {
		t.Errorf("no audit record of the export:\n%s", r.stdout)
	}

	// The key exists and was rotated: its primary version 2 is used.
	b.mustRun(t, "key", "rotate", "llama")
	enc2 := filepath.Join(t.TempDir(), "enc2")
	r = b.run(t, "admin", "model", "encrypt", "--key-id", "llama", "--in", model, "--out", enc2)
	if r.code != exitOK || strings.Contains(r.stdout, "created key") || !strings.Contains(r.stdout, "using key llama version 2 ") {
		t.Fatalf("encrypt with the primary version: %v", r)
	}
	if r := kbsctl(t, "model", "inspect", enc2, "--json"); !strings.Contains(r.stdout, `"key_version": 2`) {
		t.Errorf("inspect: %v", r)
	}
	decryptWithExport(t, b, "llama", 2, enc2)

	// --key-version picks another enabled version.
	enc1 := filepath.Join(t.TempDir(), "enc1")
	if r := b.run(t, "admin", "model", "encrypt", "--key-id", "llama", "--key-version", "1", "--in", model, "--out", enc1); r.code != exitOK || !strings.Contains(r.stdout, "using key llama version 1 ") {
		t.Fatalf("encrypt --key-version 1: %v", r)
	}
	decryptWithExport(t, b, "llama", 1, enc1)
}

func TestModelEncryptKBSErrors(t *testing.T) {
	b := startBroker(t)
	model := newModelDir(t)
	b.mustRun(t, "key", "create", "off")
	b.mustRun(t, "key", "disable", "off")
	out := filepath.Join(t.TempDir(), "enc")
	b.check(t, []cliCase{
		// The loader may not export keys (nor create them).
		{"loader", []string{"model", "encrypt", "--key-id", "off", "--in", model, "--out", out}, exitRefused, "encrypt: key off: denied by the key broker: not authorized (not_authorized, request id "},
		{"admin", []string{"model", "encrypt", "--key-id", "off", "--in", model, "--out", out}, exitFailure, "encrypt: key off is disabled in the key broker; models can only be encrypted under an enabled key"},
		{"admin", []string{"model", "encrypt", "--key-id", "new", "--key-version", "3", "--in", model, "--out", out}, exitFailure, "no such key in the key broker, so there is no version 3"},
		{"admin", []string{"model", "encrypt", "--key-id", "bad/id", "--in", model, "--out", out}, exitUsage, `--key-id "bad/id": character 4 is not allowed`},
	})
	b.mustRun(t, "key", "create", "on")
	b.check(t, []cliCase{
		{"admin", []string{"model", "encrypt", "--key-id", "on", "--key-version", "2", "--in", model, "--out", out}, exitFailure, "encrypt: key on: export version 2: no such key version (key_version_not_found"},
	})
	if _, err := os.Lstat(out); err == nil {
		t.Error("a failed encrypt --kbs wrote --out")
	}
	if r := b.run(t, "admin", "key", "get", "new"); r.code != exitFailure || !strings.Contains(r.stderr, "key_not_found") {
		t.Errorf("a refused encrypt --key-version created the key: %v", r)
	}
}
