package spire_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cml-project/cml/test/spire"
)

// spireConfig returns the harness configuration, or skips the test when no
// SPIRE binaries were given.
func spireConfig(t *testing.T) spire.Config {
	t.Helper()
	dir := os.Getenv("CML_SPIRE_DIR")
	if dir == "" {
		t.Skip("needs a real SPIRE server and agent: set CML_SPIRE_DIR to the directory of spire-server and spire-agent " +
			"(scripts/spire/install.sh builds them and prints it; make test-spire does both)")
	}
	return spire.Config{BinDir: dir}
}

// The project's binaries are built once per test binary, into one
// directory; registration entries select them by these exact paths.
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Every package the tests run as a process.
var buildPackages = map[string]string{
	"kbs":        "github.com/cml-project/cml/cmd/kbs",
	"kbsctl":     "github.com/cml-project/cml/cmd/kbsctl",
	"cml-loader": "github.com/cml-project/cml/cmd/cml-loader",
	"whoami":     "github.com/cml-project/cml/test/spire/internal/whoami",
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binaries returns the directory holding the built binaries (named as the
// keys of buildPackages).
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "cml-spire-bin-"); buildErr != nil {
			return
		}
		if buildDir, buildErr = filepath.EvalSymlinks(buildDir); buildErr != nil {
			return
		}
		args := []string{"build", "-o", buildDir + "/"}
		for _, pkg := range buildPackages {
			args = append(args, pkg)
		}
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// copyBinary copies the executable src to a new path dst: the same program
// as another workload, which SPIRE tells apart only by its path.
func copyBinary(t *testing.T, src, dst string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// result is one finished command.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, strings.TrimSpace(r.stdout), strings.TrimSpace(r.stderr))
}

// run runs a command to completion (at most timeout) and returns its exit
// code and output; only a failure to start it is fatal.
func run(t *testing.T, timeout time.Duration, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return result{0, stdout.String(), stderr.String()}
	case ctx.Err() != nil:
		t.Fatalf("%s %s: still running after %v\nstdout: %s\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), timeout, &stdout, &stderr)
	case errors.As(err, &ee):
		return result{ee.ExitCode(), stdout.String(), stderr.String()}
	}
	t.Fatalf("%s: %v", bin, err)
	return result{}
}

// mustRun is run that fails the test on a non-zero exit.
func mustRun(t *testing.T, timeout time.Duration, bin string, args ...string) string {
	t.Helper()
	r := run(t, timeout, bin, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), r)
	}
	return r.stdout
}

// eventually calls f every interval until it returns nil or timeout passed,
// then fails with f's last error.
func eventually(t *testing.T, timeout, interval time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(interval)
	}
}
