package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cml-project/cml/server/kek"
	"github.com/cml-project/cml/server/store"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func openStore(t *testing.T, dataDir string, p kek.Provider) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.DBPath(dataDir), store.Options{KEK: p, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestInitCreatesFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	code, stdout, stderr := runInProcess(t, nil, "init", "--data-dir", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, store.KEKPath(dir): 0o600, store.DBPath(dir): 0o600} {
		if got := mode(t, path); got != want {
			t.Errorf("%s: mode %04o, want %04o", path, got, want)
		}
	}
	if !containsAll(stdout, store.KEKPath(dir), store.DBPath(dir), "mode 0700", "Next", "kbs serve --data-dir "+dir) {
		t.Errorf("output does not say what was created and what is next:\n%s", stdout)
	}
	// The KEK is never printed.
	kekText, _ := os.ReadFile(store.KEKPath(dir))
	if strings.Contains(stdout+stderr, strings.TrimSpace(string(kekText))) {
		t.Error("the KEK was printed")
	}
	p, err := kek.LoadFile(store.KEKPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	openStore(t, dir, p).Close()

	// A second init refuses with exit 3 and changes nothing.
	code, _, stderr = runInProcess(t, nil, "init", "--data-dir", dir)
	if code != exitExists || !containsAll(stderr, "already exists", "--exist-ok") {
		t.Errorf("second init: exit %d, %q", code, stderr)
	}
	if again, _ := os.ReadFile(store.KEKPath(dir)); string(again) != string(kekText) {
		t.Error("second init changed the KEK")
	}

	// --exist-ok accepts it after opening the database.
	code, stdout, stderr = runInProcess(t, nil, "init", "--data-dir", dir, "--exist-ok")
	if code != exitOK || !strings.Contains(stdout, "already initialised") {
		t.Errorf("--exist-ok: exit %d, %q %q", code, stdout, stderr)
	}
	// ... but not under another KEK.
	code, _, stderr = runInProcess(t, map[string]string{kek.EnvVar: strings.Repeat("01", 32)}, "init", "--data-dir", dir, "--exist-ok")
	if code != exitFailure || !strings.Contains(stderr, "wrong KEK") {
		t.Errorf("--exist-ok with a wrong KEK: exit %d, %q", code, stderr)
	}
}

func TestInitKEKFromEnv(t *testing.T) {
	dir := t.TempDir()
	hex := strings.Repeat("ab", 32)
	code, stdout, stderr := runInProcess(t, map[string]string{kek.EnvVar: hex}, "init", "--data-dir", dir)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(store.KEKPath(dir)); !os.IsNotExist(err) {
		t.Errorf("a KEK file was written although CML_KEK was set: %v", err)
	}
	if strings.Contains(stdout+stderr, hex) || !strings.Contains(stdout, "environment variable "+kek.EnvVar) {
		t.Errorf("output:\n%s", stdout)
	}
	p, err := kek.LoadEnv(func(string) (string, bool) { return hex, true })
	if err != nil {
		t.Fatal(err)
	}
	openStore(t, dir, p).Close()
}

func TestInitKEKFile(t *testing.T) {
	kekFile := filepath.Join(t.TempDir(), "kek")
	if err := kek.Init(kekFile); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "d")
	code, _, stderr := runInProcess(t, nil, "init", "--data-dir", dir, "--kek-file", kekFile)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(store.KEKPath(dir)); !os.IsNotExist(err) {
		t.Error("a KEK file was written although --kek-file was given")
	}
	p, _ := kek.LoadFile(kekFile)
	openStore(t, dir, p).Close()

	// Both sources at once is a usage error.
	code, _, stderr = runInProcess(t, map[string]string{kek.EnvVar: strings.Repeat("cd", 32)}, "init", "--data-dir", t.TempDir(), "--kek-file", kekFile)
	if code != exitUsage || !strings.Contains(stderr, "both --kek-file and CML_KEK") {
		t.Errorf("exit %d: %q", code, stderr)
	}

	// A group-readable KEK file is refused.
	if err := os.Chmod(kekFile, 0o640); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runInProcess(t, nil, "init", "--data-dir", t.TempDir(), "--kek-file", kekFile)
	if code != exitFailure || !containsAll(stderr, kekFile, "chmod 600") {
		t.Errorf("group-readable KEK: exit %d: %q", code, stderr)
	}
}

func TestInitDataDirFromEnv(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fromenv")
	code, _, stderr := runInProcess(t, map[string]string{"KBS_DATA_DIR": dir}, "init")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(store.DBPath(dir)); err != nil {
		t.Error(err)
	}
	// The flag wins over the environment.
	flagDir := filepath.Join(t.TempDir(), "fromflag")
	if code, _, stderr := runInProcess(t, map[string]string{"KBS_DATA_DIR": dir}, "init", "--data-dir", flagDir); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(store.DBPath(flagDir)); err != nil {
		t.Error(err)
	}
}
