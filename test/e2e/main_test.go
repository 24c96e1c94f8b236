package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Set by TestMain.
var (
	repoRoot string // the module root (scripts/ and cmd/ live here)
	binDir   string // holds kbs, kbsctl and cml-loader built from this tree
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testing.Short() || runtime.GOOS != "linux" {
		// Every test skips itself (requireE2E); nothing to build.
		return m.Run()
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "go.mod"))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot find the module root from %s: %v\n", mustGetwd(), err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "cml-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// -trimpath as in 'make build', so both share the build cache.
	start := time.Now()
	cmd := exec.Command("go", "build", "-trimpath", "-o", dir+string(filepath.Separator),
		"./cmd/kbs", "./cmd/kbsctl", "./cmd/cml-loader")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build of the three binaries failed: %v\n", err)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: built kbs, kbsctl and cml-loader in %v\n", time.Since(start).Round(time.Millisecond))
	}
	binDir = dir
	return m.Run()
}

func mustGetwd() string {
	wd, err := os.Getwd()
	if err != nil {
		return "?"
	}
	return wd
}

// requireE2E skips the test under -short (and where TestMain built nothing).
func requireE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: runs the real binaries as processes; skipped with -short")
	}
	if binDir == "" {
		t.Skipf("e2e: needs Linux (/proc, Pdeathsig, /dev/shm-like tmpfs semantics); GOOS=%s", runtime.GOOS)
	}
}
