package spire

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StopTimeout is how long a process gets between SIGTERM and SIGKILL.
const StopTimeout = 10 * time.Second

// Process is a long-running child process whose output goes to a log file.
type Process struct {
	Name string
	Log  string // path of the file with its stdout and stderr

	cmd  *exec.Cmd
	done chan struct{}
	err  error // the Wait result, set before done is closed
}

// StartProcess starts bin with args, its output appended to logPath, and
// registers its stop with t.Cleanup. If the test failed, the cleanup
// prints the log's last lines.
func StartProcess(t testing.TB, name, logPath string, env []string, bin string, args ...string) *Process {
	t.Helper()
	p, err := startProcess(name, logPath, env, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("spire: stop %s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("last lines of %s's log %s:\n%s", name, logPath, Tail(logPath, 40))
		}
	})
	return p
}

func startProcess(name, logPath string, env []string, bin string, args ...string) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spire: %s log: %w", name, err)
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if env != nil {
		cmd.Env = env
	}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("spire: start %s (%s): %w", name, bin, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM and waits; after StopTimeout it sends SIGKILL. It
// returns an error only if the process had to be killed. Calling it again
// does nothing.
func (p *Process) Stop() error {
	if exited, _ := p.Exited(); exited {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM pid %d: %w", p.PID(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(StopTimeout):
	}
	p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("pid %d did not stop within %v of SIGTERM; killed", p.PID(), StopTimeout)
}

// Tail returns the last n lines of the file at path (or why it cannot).
func Tail(path string, n int) string {
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
