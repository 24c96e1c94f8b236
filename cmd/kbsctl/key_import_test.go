package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestKeyImport(t *testing.T) {
	b := startBroker(t)
	key := newKey(t)
	r := b.mustRun(t, "key", "import", "imported", "--key-file", key, "--description", "from 2024", "--label", "origin=offline")
	if !strings.Contains(r.stdout, "imported "+key+" into key imported as version 1 (primary)") {
		t.Errorf("output:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "still holds the key outside the broker") {
		t.Errorf("no warning about the key file: %q", r.stderr)
	}
	key2 := newKey(t)
	r = b.mustRun(t, "key", "import", "imported", "--key-file", key2, "--new-version")
	if !strings.Contains(r.stdout, "as version 2 (primary)") {
		t.Errorf("new version output:\n%s", r.stdout)
	}
	r = b.mustRun(t, "key", "get", "imported")
	if !regexp.MustCompile(`(?m)^  1 +enabled +imported `).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^  2 \(primary\) +enabled +imported `).MatchString(r.stdout) {
		t.Errorf("origins are not 'imported':\n%s", r.stdout)
	}

	// The broker holds exactly the bytes of the file: a model encrypted
	// offline with version 2's file decrypts with what the broker exports.
	model := newModelDir(t)
	enc := filepath.Join(t.TempDir(), "enc")
	if r := kbsctl(t, "model", "encrypt", "--key-file", key2, "--key-id", "imported", "--key-version", "2", "--in", model, "--out", enc); r.code != exitOK {
		t.Fatalf("encrypt: %v", r)
	}
	decryptWithExport(t, b, "imported", 2, enc)
}

func TestKeyImportErrors(t *testing.T) {
	b := startBroker(t)
	key := newKey(t)
	b.mustRun(t, "key", "create", "exists")
	notKey := tempFile(t, "not.key", "secret passphrase\n")
	b.check(t, []cliCase{
		{"admin", []string{"key", "import", "exists", "--key-file", key}, exitFailure, "key import exists: a key with this id exists already (key_exists"},
		{"admin", []string{"key", "import", "exists", "--key-file", key}, exitFailure, "to add the key as a new version of it, pass --new-version"},
		{"admin", []string{"key", "import", "missing", "--key-file", key, "--new-version"}, exitFailure, "no such key (key_not_found"},
		{"admin", []string{"key", "import", "x"}, exitUsage, "--key-file is required"},
		{"admin", []string{"key", "import", "x", "--key-file", key, "--new-version", "--label", "a=b"}, exitUsage, "cannot be given with --new-version"},
		{"admin", []string{"key", "import", "x", "--key-file", notKey}, exitFailure, "not a key: character 1 is not a hex digit"},
		{"admin", []string{"key", "import", "x", "--key-file", filepath.Join(t.TempDir(), "none")}, exitFailure, "no such file"},
		{"loader", []string{"key", "import", "x", "--key-file", key}, exitRefused, "not_authorized"},
	})
}
