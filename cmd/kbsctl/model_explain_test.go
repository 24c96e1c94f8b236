package main

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cml-project/cml/emdl"
)

// TestExplainModelError checks the hint given for each emdl sentinel: the
// message keeps emdl's file and reason, adds a hint that fits the cause,
// and refused models exit with exitRefused.
func TestExplainModelError(t *testing.T) {
	const dir = "./llama.emdl"
	cases := []struct {
		name, op string
		err      *emdl.Error
		want     string // in the hint
		notWant  string // a hint that would be wrong here
		code     int
	}{
		{"wrong key", "decrypt", &emdl.Error{Path: emdl.ManifestName, Err: emdl.ErrWrongKey, Reason: "key check failed"},
			"pass the right --key-file ('kbsctl model inspect " + dir + "'", "", exitRefused},
		{"key mismatch", "decrypt", &emdl.Error{Path: emdl.ManifestName, Err: emdl.ErrKeyMismatch, Reason: "key version 2, not version 3"},
			"against 'kbsctl model inspect " + dir + "'", "", exitRefused},
		{"bad chunk", "decrypt", &emdl.Error{Path: "w.bin", Err: emdl.ErrTampered, Reason: "chunk 3 failed authentication (tampered, reordered or spliced)"},
			"modified after it was encrypted (tampering, or corruption", "encryptor", exitRefused},
		{"wrong hash", "decrypt", &emdl.Error{Path: "w.bin", Err: emdl.ErrTampered, Reason: plaintextHashReason},
			"the encryptor recorded a wrong hash in the manifest", "modified after it was encrypted", exitRefused},
		{"foreign file", "decrypt", &emdl.Error{Path: "w.bin", Err: emdl.ErrTampered, Reason: "header does not match the manifest: the file belongs to another model"},
			"copied in from another encrypted model", "modified after it was encrypted", exitRefused},
		{"truncated", "decrypt", &emdl.Error{Path: "w.bin", Err: emdl.ErrTruncated, Reason: "truncated: 1 bytes, its header says 2"},
			"shorter than when it was encrypted", "", exitRefused},
		{"extended", "decrypt", &emdl.Error{Path: "w.bin", Err: emdl.ErrExtended, Reason: "extended: 3 bytes, its header says 2"},
			"data was added to the file", "", exitRefused},
		{"unknown suite", "inspect", &emdl.Error{Path: emdl.ManifestName, Err: emdl.ErrUnsupported, Reason: "unknown suite 9"},
			"decrypt it with a newer kbsctl", "", exitRefused},
		{"input too large", "encrypt", &emdl.Error{Path: "w.bin", Err: emdl.ErrUnsupported, Reason: "file of 1 bytes exceeds the limit of 0 bytes"},
			"exceeds a limit of the EMDL v1 format", "newer kbsctl", exitFailure},
		{"symlink in input", "encrypt", &emdl.Error{Path: "w.bin", Err: emdl.ErrUnsafePath, Reason: "symlinks are not supported"},
			"--in must hold only regular files", "", exitFailure},
		{"symlink in model", "decrypt", &emdl.Error{Path: "w.bin", Err: emdl.ErrUnsafePath, Reason: "symlink in the model directory"},
			"replace links and special files with plain copies", "", exitRefused},
		{"stray file", "decrypt", &emdl.Error{Path: "x.bin", Err: emdl.ErrNotInManifest, Reason: "file not in manifest"},
			"remove the stray file", "", exitRefused},
		{"no manifest", "inspect", &emdl.Error{Path: emdl.ManifestName, Err: emdl.ErrMissingFile, Reason: "missing"},
			"is this a model directory written by 'kbsctl model encrypt'?", "", exitRefused},
		{"missing file", "decrypt", &emdl.Error{Path: "w.bin", Err: emdl.ErrMissingFile, Reason: "missing"},
			"copy the model again (the manifest lists this file", "", exitRefused},
		{"output exists", "decrypt", &emdl.Error{Path: "out", Err: emdl.ErrOutputExists},
			"choose an --out that does not exist", "empty directory", exitFailure},
		{"io error", "decrypt", &emdl.Error{Path: "w.bin", Err: fs.ErrPermission, Reason: "reading header"},
			"", "", exitFailure},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := explainModelError(c.op, dir, c.err)
			msg := err.Error()
			prefix := c.op + " " + dir + ": " + c.err.Path + ": "
			if !strings.HasPrefix(msg, prefix) {
				t.Errorf("message %q does not start with %q", msg, prefix)
			}
			if c.err.Reason != "" && !strings.Contains(msg, c.err.Reason) {
				t.Errorf("message %q lacks emdl's reason %q", msg, c.err.Reason)
			}
			hint, hasHint := "", false
			if i := strings.Index(msg, "; "); i >= 0 {
				hint, hasHint = msg[i+2:], true
			}
			if c.want == "" && hasHint {
				t.Errorf("message %q has a hint, want none", msg)
			}
			if !strings.Contains(hint, c.want) {
				t.Errorf("hint %q lacks %q", hint, c.want)
			}
			if c.notWant != "" && strings.Contains(hint, c.notWant) {
				t.Errorf("hint %q says %q, which is wrong here", hint, c.notWant)
			}
			if !errors.Is(err, c.err.Err) {
				t.Errorf("error does not unwrap to %v", c.err.Err)
			}
			code := exitFailure
			var ce *codedError
			if errors.As(err, &ce) {
				code = ce.code
			}
			if code != c.code {
				t.Errorf("exit code %d, want %d", code, c.code)
			}
		})
	}
}

// TestExplainModelErrorInconsistentHash decrypts a real model whose chunks
// are authentic but whose manifest holds a wrong SHA-256 (testdata/README.md):
// emdl's reason must still be the one the hint keys on, and the hint must
// blame the encryptor, not tampering.
func TestExplainModelErrorInconsistentHash(t *testing.T) {
	key := filepath.Join(t.TempDir(), "fixture.key")
	writeFile(t, key, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", 0o600)
	enc := filepath.Join("testdata", "inconsistent-hash.emdl")
	r := kbsctl(t, "model", "decrypt", "--key-file", key, "--in", enc, "--out", filepath.Join(t.TempDir(), "out"), "--verify-plaintext-hash")
	want := "decrypt " + enc + ": weights.bin: " + plaintextHashReason + "; every chunk of this file authenticated"
	if r.code != exitRefused || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "modified after it was encrypted") {
		t.Fatalf("want exit %d and %q: %v", exitRefused, want, r)
	}
}
