package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

func TestModelKeygen(t *testing.T) {
	// The mode must be 0600 whatever the umask; a permissive umask must not
	// widen it, a restrictive one cannot.
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })

	dir := t.TempDir()
	path := filepath.Join(dir, "model.key")
	r := kbsctl(t, "model", "keygen", path)
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("keygen: %v", r)
	}
	if !strings.Contains(r.stdout, "wrote a new 256-bit key to "+path+" (mode 0600)") {
		t.Errorf("stdout: %q", r.stdout)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(data) {
		t.Errorf("key file content is not 64 lowercase hex digits and a newline (%d bytes)", len(data))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	var warn bytes.Buffer
	if _, err := readKeyFile("--key-file", path, &warn); err != nil || warn.Len() != 0 {
		t.Errorf("generated key does not read back cleanly: %v %s", err, warn.String())
	}

	// A second key is different.
	path2 := filepath.Join(dir, "other.key")
	if r := kbsctl(t, "model", "keygen", path2); r.code != exitOK {
		t.Fatalf("keygen: %v", r)
	}
	data2, _ := os.ReadFile(path2)
	if bytes.Equal(data, data2) {
		t.Error("two keygens wrote the same key")
	}
}

func TestModelKeygenRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.key")
	writeFile(t, path, "precious\n", 0o600)
	r := kbsctl(t, "model", "keygen", path)
	if r.code != exitFailure {
		t.Fatalf("keygen over an existing file: %v", r)
	}
	if want := "kbsctl: " + path + " already exists; keygen never overwrites a key file"; !strings.HasPrefix(r.stderr, want) {
		t.Errorf("stderr %q, want prefix %q", r.stderr, want)
	}
	if data, _ := os.ReadFile(path); string(data) != "precious\n" {
		t.Errorf("existing file changed to %q", data)
	}

	// Nor through a symlink, even a dangling one.
	link := filepath.Join(dir, "link.key")
	target := filepath.Join(dir, "target")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if r := kbsctl(t, "model", "keygen", link); r.code != exitFailure || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("keygen through a symlink: %v", r)
	}
	if _, err := os.Lstat(target); err == nil {
		t.Error("keygen followed a symlink")
	}
}

func TestModelKeygenErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "k")
	r := kbsctl(t, "model", "keygen", missing)
	if r.code != exitFailure || !strings.Contains(r.stderr, "kbsctl: creating key file "+missing+": no such file or directory") {
		t.Errorf("keygen into a missing directory: %v", r)
	}
	if r := kbsctl(t, "model", "keygen"); r.code != exitUsage || !strings.Contains(r.stderr, "keygen: missing FILE") {
		t.Errorf("keygen without FILE: %v", r)
	}
	if r := kbsctl(t, "model", "keygen", "a", "b"); r.code != exitUsage {
		t.Errorf("keygen with two files: %v", r)
	}
}
