package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

func TestCollateralImport(t *testing.T) {
	src := filepath.Join(newSim(t), tdxsim.CollateralDir)
	dst := filepath.Join(t.TempDir(), "collateral")
	r := kbsctl(t, "collateral", "import", src, "--dir", dst)
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("collateral import: %v", r)
	}
	entries, err := collateral.ReadDir(dst)
	if err != nil || len(entries) == 0 {
		t.Fatalf("nothing usable in %s: %d entries, %v", dst, len(entries), err)
	}
	for _, e := range entries {
		line := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(e.Key.String()) + ` +installed +\d{4}-\d\d-\d\dT\S+Z +\d{4}-\d\d-\d\dT\S+Z$`)
		if !line.MatchString(r.stdout) {
			t.Errorf("output lacks a line for %s:\n%s", e.Key, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, plural(len(entries), "document")+" of "+strconv.Itoa(len(entries))+" installed in "+dst+"; import a fresh bundle before ") {
		t.Errorf("summary:\n%s", r.stdout)
	}

	// Again: nothing changes, and --json says so.
	r = kbsctl(t, "collateral", "import", src, "--dir", dst, "--json")
	if r.code != exitOK {
		t.Fatalf("second import: %v", r)
	}
	var got []collateralImportJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if len(got) != len(entries) {
		t.Fatalf("--json lists %d documents, want %d", len(got), len(entries))
	}
	for _, d := range got {
		if d.Action != "unchanged" || !d.NextUpdate.After(time.Now()) || !d.IssueDate.Before(d.NextUpdate) || d.Kind == "" {
			t.Errorf("--json document %+v", d)
		}
	}
}

func TestCollateralImportErrors(t *testing.T) {
	src := filepath.Join(newSim(t), tdxsim.CollateralDir)
	dst := filepath.Join(t.TempDir(), "collateral")
	empty := t.TempDir()
	file := filepath.Join(empty, "f")
	os.WriteFile(file, nil, 0o644)
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"collateral", "import", src}, exitUsage, "--dir is required"},
		{[]string{"collateral", "import", "--dir", dst}, exitUsage, "import: missing SRC"},
		{[]string{"collateral", "import", missing, "--dir", dst}, exitFailure, "collateral import " + missing + ": no such file or directory"},
		{[]string{"collateral", "import", file, "--dir", dst}, exitFailure, "not a directory"},
		{[]string{"collateral", "import", filepath.Join(t.TempDir()), "--dir", dst}, exitFailure, "holds no collateral"},
	} {
		r := kbsctl(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("kbsctl %q: want exit %d and %q: %v", tc.args, tc.code, tc.msg, r)
		}
	}
	// Expired collateral: all refused, nothing written.
	later := time.Now().Add(tdxsim.DefaultCollateralValidity + time.Hour)
	r := kbsctlEnv(t.Context(), &env{now: func() time.Time { return later }}, "collateral", "import", src, "--dir", dst)
	if r.code != exitFailure || !strings.Contains(r.stderr, "nothing was written; fetch a fresh bundle") {
		t.Errorf("expired collateral: %v", r)
	}
	if _, err := os.Stat(dst); err == nil {
		if entries, _ := collateral.ReadDir(dst); len(entries) != 0 {
			t.Errorf("a failed import wrote %d documents", len(entries))
		}
	}
}
