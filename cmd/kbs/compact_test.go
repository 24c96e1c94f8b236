package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cml-project/cml/server/kek"
	"github.com/cml-project/cml/server/store"
)

// initDataDir runs kbs init and returns the directory and its KEK.
func initDataDir(t *testing.T) (string, kek.Provider) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if code, _, stderr := runInProcess(t, nil, "init", "--data-dir", dir); code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	p, err := kek.LoadFile(store.KEKPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	return dir, p
}

func TestCompactCommand(t *testing.T) {
	dir, p := initDataDir(t)
	ctx := context.Background()
	st := openStore(t, dir, p)
	for _, id := range []string{"keep", "gone"} {
		if _, err := st.CreateKey(ctx, id, store.KeyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	want, _, err := st.UnwrapKey(ctx, "keep", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.DestroyKey(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// --db, with the KEK file found beside it; then --data-dir with a
	// KEK from the environment and an agreeing KBS_DB.
	kekHex, err := os.ReadFile(store.KEKPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
	}{
		{nil, []string{"compact", "--db", store.DBPath(dir)}},
		{map[string]string{kek.EnvVar: strings.TrimSpace(string(kekHex)), "KBS_DB": store.DBPath(dir)}, []string{"compact", "--data-dir", dir}},
	} {
		code, stdout, stderr := runInProcess(t, tc.env, tc.args...)
		if code != exitOK || stderr != "" {
			t.Fatalf("%v: exit %d: %s", tc.args, code, stderr)
		}
		if !containsAll(stdout, "Compacted "+store.DBPath(dir), "before,", "after.", "audit chain of 0 records", "overwritten with zeros") {
			t.Errorf("%v: output:\n%s", tc.args, stdout)
		}
		if strings.Contains(stdout, strings.TrimSpace(string(kekHex))) {
			t.Error("the KEK was printed")
		}
	}
	if got := mode(t, store.DBPath(dir)); got != 0o600 {
		t.Errorf("mode %04o after compaction, want 0600", got)
	}

	st = openStore(t, dir, p)
	defer st.Close()
	got, _, err := st.UnwrapKey(ctx, "keep", 0)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("kept key after compaction: %v", err)
	}
	if _, err := st.CreateKey(ctx, "gone", store.KeyOptions{}); !errors.Is(err, store.ErrKeyDestroyed) {
		t.Errorf("destroyed id reusable after compaction: %v", err)
	}
}

func TestCompactRefusesRunningBroker(t *testing.T) {
	dir, p := initDataDir(t)
	st := openStore(t, dir, p) // holds the lock as kbs serve does
	defer st.Close()
	before, err := os.ReadFile(store.DBPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runInProcess(t, nil, "compact", "--data-dir", dir)
	if code != exitFailure || !containsAll(stderr, "database is in use by a running kbs; stop it first", store.DBPath(dir)) || stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if after, _ := os.ReadFile(store.DBPath(dir)); !bytes.Equal(after, before) {
		t.Error("the database changed")
	}
}

func TestCompactErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope", store.DBFileName)
	for _, tc := range []struct {
		env  map[string]string
		args []string
		code int
		want []string
	}{
		{nil, []string{"compact"}, exitUsage, []string{"--db or --data-dir is required", "kbs compact --help"}},
		{nil, []string{"compact", "--db", "a/keystore.db", "--data-dir", "b"}, exitUsage, []string{"name different databases"}},
		{map[string]string{"KBS_DATA_DIR": "b"}, []string{"compact", "--db", "a/keystore.db"}, exitUsage, []string{"name different databases"}},
		{nil, []string{"compact", "--db", missing}, exitFailure, []string{"does not exist", missing}},
		{nil, []string{"compact", "--db", missing, "--kek-file", "k"}, exitFailure, []string{"does not exist", missing}},
		{map[string]string{kek.EnvVar: strings.Repeat("01", 32)}, []string{"compact", "--db", dir}, exitFailure, []string{"not a regular file", dir}},
		{map[string]string{kek.EnvVar: strings.Repeat("01", 32)}, []string{"compact", "--db", dir, "--kek-file", "k"}, exitUsage, []string{"both --kek-file and CML_KEK"}},
	} {
		code, _, stderr := runInProcess(t, tc.env, tc.args...)
		if code != tc.code || !containsAll(stderr, tc.want...) {
			t.Errorf("%v (env %v): exit %d, stderr %q; want exit %d with %q", tc.args, tc.env, code, stderr, tc.code, tc.want)
		}
	}

	// A wrong KEK is refused before anything is written.
	dataDir, _ := initDataDir(t)
	code, _, stderr := runInProcess(t, map[string]string{kek.EnvVar: strings.Repeat("01", 32)}, "compact", "--data-dir", dataDir)
	if code != exitFailure || !strings.Contains(stderr, "wrong KEK") {
		t.Errorf("wrong KEK: exit %d, %q", code, stderr)
	}
}

func TestCompactHelp(t *testing.T) {
	code, stdout, _ := runInProcess(t, nil, "compact", "--help")
	if code != exitOK || !containsAll(stdout, "kbs compact --db PATH", "--data-dir", "--kek-file", "[KBS_DB]", "CML_KEK", "maintenance window", store.CompactTempSuffix, "Exit codes:") {
		t.Errorf("compact --help: exit %d:\n%s", code, stdout)
	}
	code, stdout, _ = runInProcess(t, nil, "help")
	if code != exitOK || !strings.Contains(stdout, "\n  compact ") {
		t.Errorf("top-level help does not list compact:\n%s", stdout)
	}
}
