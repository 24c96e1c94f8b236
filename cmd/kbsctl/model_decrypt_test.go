package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// encryptedModel encrypts a fresh directory model and returns the key file,
// the plaintext directory and the encrypted directory.
func encryptedModel(t *testing.T, extra ...string) (key, model, enc string) {
	t.Helper()
	key = newKey(t)
	model = newModelDir(t)
	enc = filepath.Join(t.TempDir(), "model.emdl")
	args := append([]string{"model", "encrypt", "--key-file", key, "--key-id", "llama", "--key-version", "2",
		"--chunk-size", "4KiB", "--in", model, "--out", enc}, extra...)
	if r := kbsctl(t, args...); r.code != exitOK {
		t.Fatalf("encrypt: %v", r)
	}
	return key, model, enc
}

// largestFile returns the biggest regular file under dir.
func largestFile(t *testing.T, dir string) string {
	t.Helper()
	var best string
	var size int64 = -1
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil && fi.Size() > size {
				best, size = p, fi.Size()
			}
		}
		return err
	})
	return best
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err == nil {
		t.Errorf("%s exists after a failed decrypt", path)
	}
	// Nor any temporary file beside it.
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*"))
	if len(matches) != 0 {
		t.Errorf("left behind beside %s: %q", path, matches)
	}
}

func TestModelDecryptWrongKey(t *testing.T) {
	_, _, enc := encryptedModel(t)
	other := newKey(t)
	out := filepath.Join(t.TempDir(), "out")
	r := kbsctl(t, "model", "decrypt", "--key-file", other, "--in", enc, "--out", out)
	if r.code != exitRefused {
		t.Fatalf("wrong key: want exit %d: %v", exitRefused, r)
	}
	if !strings.HasPrefix(r.stderr, "kbsctl: decrypt "+enc+": ") ||
		!strings.Contains(r.stderr, `key "llama" version 2`) ||
		!strings.Contains(r.stderr, "; pass the right --key-file") {
		t.Errorf("wrong key message: %q", r.stderr)
	}
	mustNotExist(t, out)
}

func TestModelDecryptRefusesAlteredModels(t *testing.T) {
	const shard = "weights/model-00001.safetensors" // the largest file
	for _, tc := range []struct {
		name  string
		alter func(t *testing.T, enc string)
		args  []string
		want  []string // in the message, after "kbsctl: decrypt ENC: "
	}{
		{"tampered", func(t *testing.T, enc string) {
			p := filepath.Join(enc, shard)
			data, _ := os.ReadFile(p)
			data[len(data)/2] ^= 0x01
			os.WriteFile(p, data, 0o644)
		}, nil, []string{shard + ": ", "; the model was modified after it was encrypted"}},
		{"truncated", func(t *testing.T, enc string) {
			p := filepath.Join(enc, shard)
			fi, _ := os.Stat(p)
			os.Truncate(p, fi.Size()-5000)
		}, nil, []string{shard + ": ", "; the file is shorter than when it was encrypted"}},
		{"extended", func(t *testing.T, enc string) {
			f, _ := os.OpenFile(filepath.Join(enc, shard), os.O_APPEND|os.O_WRONLY, 0)
			f.Write(make([]byte, 4096+16))
			f.Close()
		}, nil, []string{shard + ": ", "; data was added to the file after it was encrypted"}},
		{"stray file", func(t *testing.T, enc string) {
			os.WriteFile(filepath.Join(enc, "weights", "extra.bin"), []byte("x"), 0o644)
		}, nil, []string{"weights/extra.bin: ", "; remove the stray file"}},
		{"missing file", func(t *testing.T, enc string) {
			os.Remove(filepath.Join(enc, "tokenizer.json"))
		}, nil, []string{"tokenizer.json: ", "; copy the model again"}},
		{"missing manifest", func(t *testing.T, enc string) {
			os.Remove(filepath.Join(enc, "MANIFEST.emdl"))
		}, nil, []string{"MANIFEST.emdl: ", "; is this a model directory written by 'kbsctl model encrypt'?"}},
		{"symlink", func(t *testing.T, enc string) {
			os.Symlink("/etc/passwd", filepath.Join(enc, "weights", "passwd"))
		}, nil, []string{"weights/passwd: ", "; the model is refused"}},
		{"key id mismatch", nil, []string{"--key-id", "mistral"}, []string{`"llama", not "mistral"`, "; check --key-id and --key-version"}},
		{"key version mismatch", nil, []string{"--key-version", "3"}, []string{"version 2, not version 3", "; check --key-id and --key-version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, _, enc := encryptedModel(t)
			if tc.alter != nil {
				tc.alter(t, enc)
			}
			out := filepath.Join(t.TempDir(), "out")
			r := kbsctl(t, append([]string{"model", "decrypt", "--key-file", key, "--in", enc, "--out", out}, tc.args...)...)
			if r.code != exitRefused || !strings.HasPrefix(r.stderr, "kbsctl: decrypt "+enc+": ") {
				t.Fatalf("want exit %d naming %s: %v", exitRefused, enc, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("message lacks %q: %s", w, r.stderr)
				}
			}
			if strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("message is not one line: %q", r.stderr)
			}
			mustNotExist(t, out)
		})
	}
}

func TestModelDecryptErrors(t *testing.T) {
	key, _, enc := encryptedModel(t)
	tmp := t.TempDir()
	exists := filepath.Join(tmp, "exists")
	if err := os.Mkdir(exists, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(exists, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(tmp, "out")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--in", enc, "--out", out}, exitUsage, "decrypt: --key-file is required"},
		{[]string{"--key-file", key, "--out", out}, exitUsage, "decrypt: --in is required"},
		{[]string{"--key-file", key, "--in", enc}, exitUsage, "decrypt: --out is required"},
		{[]string{"--key-file", key, "--in", enc, "--out", out, "--key-version", "5000000000"}, exitUsage, "out of range"},
		{[]string{"--key-file", key, "--in", enc, "--out", exists}, exitFailure, "choose an --out that does not exist"},
		{[]string{"--key-file", filepath.Join(tmp, "nokey"), "--in", enc, "--out", out}, exitFailure, "--key-file " + filepath.Join(tmp, "nokey") + ": no such file"},
		{[]string{"--key-file", key, "--in", filepath.Join(tmp, "nomodel"), "--out", out}, exitFailure, "decrypt " + filepath.Join(tmp, "nomodel")},
	} {
		r := kbsctl(t, append([]string{"model", "decrypt"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("decrypt %q: want exit %d and %q: %v", tc.args, tc.code, tc.msg, r)
		}
	}
	if _, err := os.Lstat(out); err == nil {
		t.Error("a failed decrypt left output behind")
	}
	if tree := readTree(t, exists); len(tree) != 1 {
		t.Errorf("decrypt touched an existing --out: %v", tree)
	}
}

// stepClock is a clock that moves one second on every reading, so every
// progress Add redraws.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	// onWrite, if set, is called (once per write) under the lock.
	onWrite func()
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.onWrite != nil {
		l.onWrite()
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestModelDecryptProgress(t *testing.T) {
	key, model, enc := encryptedModel(t)
	for _, quiet := range []bool{false, true} {
		out := filepath.Join(t.TempDir(), "out")
		var stdout, stderr lockedBuffer
		clk := &stepClock{t: time.Unix(1_700_000_000, 0)}
		e := &env{stdout: &stdout, stderr: &stderr, terminal: true, now: clk.now}
		args := []string{"model", "decrypt", "--key-file", key, "--in", enc, "--out", out}
		if quiet {
			args = append(args, "--quiet")
		}
		if code := e.run(t.Context(), args); code != exitOK {
			t.Fatalf("decrypt: exit %d: %s", code, stderr.String())
		}
		sameTree(t, model, out)
		got := stderr.String()
		if quiet {
			if got != "" {
				t.Errorf("--quiet drew progress: %q", got)
			}
			continue
		}
		if !strings.Contains(got, "\r\x1b[Kdecrypt  ") || !strings.Contains(got, " / 423.3 KiB  ") || !strings.Contains(got, "ETA ") {
			t.Errorf("no progress line on a terminal: %q", got)
		}
		if !strings.HasSuffix(got, "\r\x1b[Kdecrypt  423.3 KiB in ") && !strings.Contains(got, "\r\x1b[Kdecrypt  423.3 KiB in ") {
			t.Errorf("no final summary line: %q", got)
		}
		if !strings.HasSuffix(got, "/s\n") {
			t.Errorf("progress does not end with a summary line: %q", got)
		}
		if summaryLine.FindString(stdout.String()) == "" {
			t.Errorf("stdout summary: %q", stdout.String())
		}
	}
}

func TestModelDecryptInterrupted(t *testing.T) {
	key, _, enc := encryptedModel(t)

	// Cancelled before it starts.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out := filepath.Join(t.TempDir(), "out")
	r := kbsctlEnv(ctx, &env{now: time.Now}, "model", "decrypt", "--key-file", key, "--in", enc, "--out", out)
	if r.code != exitInterrupted || !strings.Contains(r.stderr, "kbsctl: interrupted; nothing was written to "+out) {
		t.Errorf("cancelled decrypt: %v", r)
	}
	mustNotExist(t, out)

	// Cancelled in the middle: the first progress redraw cancels the context,
	// as Ctrl-C would.
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	out = filepath.Join(t.TempDir(), "out")
	stderr := &lockedBuffer{onWrite: cancel}
	clk := &stepClock{t: time.Unix(1_700_000_000, 0)}
	r = kbsctlEnv(ctx, &env{stderr: stderr, terminal: true, now: clk.now},
		"model", "decrypt", "--key-file", key, "--in", enc, "--out", out, "--workers", "1")
	if r.code != exitInterrupted || !strings.Contains(stderr.String(), "kbsctl: interrupted; nothing was written to "+out) {
		t.Errorf("decrypt interrupted midway: exit %d, stderr %q", r.code, stderr.String())
	}
	mustNotExist(t, out)
}

// TestModelDecryptHashModes decrypts with the default (no plaintext-hash
// re-check), --verify-plaintext-hash and the old --skip-plaintext-hash: each
// gives the model, and each refuses a modified chunk, which the chunk tags
// catch whatever the mode.
func TestModelDecryptHashModes(t *testing.T) {
	key, model, enc := encryptedModel(t)
	modes := [][]string{nil, {"--verify-plaintext-hash"}, {"--skip-plaintext-hash"}}
	for _, flags := range modes {
		out := filepath.Join(t.TempDir(), "out")
		args := append([]string{"model", "decrypt", "--key-file", key, "--in", enc, "--out", out}, flags...)
		if r := kbsctl(t, args...); r.code != exitOK {
			t.Fatalf("decrypt %v: %v", flags, r)
		}
		sameTree(t, model, out)
	}

	p := filepath.Join(enc, "weights/model-00001.safetensors")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, flags := range modes {
		out := filepath.Join(t.TempDir(), "out")
		args := append([]string{"model", "decrypt", "--key-file", key, "--in", enc, "--out", out}, flags...)
		r := kbsctl(t, args...)
		if r.code != exitRefused || !strings.Contains(r.stderr, "chunk") || !strings.Contains(r.stderr, "weights/model-00001.safetensors: ") {
			t.Errorf("tampered chunk, decrypt %v: want exit %d naming the chunk: %v", flags, exitRefused, r)
		}
		mustNotExist(t, out)
	}

	out := filepath.Join(t.TempDir(), "out")
	r := kbsctl(t, "model", "decrypt", "--key-file", key, "--in", enc, "--out", out, "--verify-plaintext-hash", "--skip-plaintext-hash")
	if r.code != exitUsage || !strings.Contains(r.stderr, "contradict") {
		t.Errorf("both hash flags: want exit %d: %v", exitUsage, r)
	}
}

// TestModelDecryptInconsistentHash decrypts testdata/inconsistent-hash.emdl,
// whose chunks are authentic but whose manifest holds a wrong SHA-256 for
// weights.bin (see testdata/README.md): --verify-plaintext-hash refuses it,
// the default does not look.
func TestModelDecryptInconsistentHash(t *testing.T) {
	key := filepath.Join(t.TempDir(), "fixture.key")
	if err := os.WriteFile(key, []byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enc := filepath.Join("testdata", "inconsistent-hash.emdl")

	out := filepath.Join(t.TempDir(), "out")
	r := kbsctl(t, "model", "decrypt", "--key-file", key, "--in", enc, "--out", out, "--verify-plaintext-hash")
	if r.code != exitRefused || !strings.Contains(r.stderr, "weights.bin: plaintext SHA-256 does not match the manifest") {
		t.Fatalf("decrypt --verify-plaintext-hash: want exit %d naming the hash: %v", exitRefused, r)
	}
	mustNotExist(t, out)

	r = kbsctl(t, "model", "decrypt", "--key-file", key, "--in", enc, "--out", out)
	if r.code != exitOK {
		t.Fatalf("default decrypt: %v", r)
	}
	got := readTree(t, out)
	want := make([]byte, 10000)
	for i := range want {
		want[i] = byte(i % 251)
	}
	if len(got) != 2 || got["weights.bin"] != string(want) || got["config.json"] != "{\"fixture\": \"inconsistent-hash\"}\n" {
		t.Errorf("decrypted %d files; weights.bin or config.json differ from testdata/README.md", len(got))
	}
}
