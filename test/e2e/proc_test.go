package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	stopTimeout = 10 * time.Second // SIGTERM, then this long, then SIGKILL
	runTimeout  = 90 * time.Second // bound on any one foreground command
)

// cleanEnv is the environment of every child: this process's, without the
// variables the three programs read, so a developer's shell cannot change
// what a test runs.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "CML_") || strings.HasPrefix(name, "KBS_") ||
			name == "SPIFFE_ENDPOINT_SOCKET" || name == "KBSCTL_REPORT_RSS" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// proc is a background child process whose stdout and stderr go to a file.
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's result, set before done is closed
}

// startProc starts bin with args in dir, output to logPath, and registers
// its stop (SIGTERM, SIGKILL after stopTimeout) with t.Cleanup; if the test
// failed, the cleanup prints the log's end.
func startProc(t *testing.T, name, dir, logPath string, env []string, bin string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("%s log: %v", name, err)
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("last lines of %s's log %s:\n%s", name, logPath, tail(logPath, 30))
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to end and returns its exit code, or
// -1 if a signal ended it. It fails the test if the process is still
// running after d.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s still running after %v; log:\n%s", p.name, d, tail(p.log, 30))
	}
	return exitCode(p.cmd.ProcessState)
}

// stop sends SIGTERM and waits; after stopTimeout it sends SIGKILL and
// reports an error. Stopping an ended process does nothing.
func (p *proc) stop() error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	p.cmd.Process.Kill()
	<-p.done
	return errors.New("did not stop within 10s of SIGTERM; killed")
}

// exitCode is the exit code in st, or -1 when a signal ended the process.
func exitCode(st *os.ProcessState) int {
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1
	}
	return st.ExitCode()
}

// result is a finished foreground command.
type result struct {
	args   []string
	code   int
	stdout string
	stderr string
}

func (r result) String() string {
	return "$ " + strings.Join(r.args, " ") + "\nexit code " + strconv.Itoa(r.code) +
		"\n--- stdout\n" + r.stdout + "--- stderr\n" + r.stderr
}

// runCmd runs bin with args in dir and returns what it did; it fails the
// test only if the command cannot start or outlives runTimeout.
func runCmd(t *testing.T, dir string, env []string, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.SysProcAttr = sysProcAttr()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: append([]string{filepath.Base(bin)}, args...), stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s: still running after %v\n%s", r.args[0], runTimeout, r)
	case errors.As(err, &ee):
		r.code = exitCode(ee.ProcessState)
	case err != nil:
		t.Fatalf("%s: %v", r.args[0], err)
	}
	return r
}

// tail returns the last n lines of the file at path (or why it cannot).
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(string(bytes.TrimRight(b, "\n")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
