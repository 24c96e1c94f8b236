package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/identity/devca"
	"github.com/cml-project/cml/tdx/tdxsim"
)

// binDir holds the kbs binary built for the process tests.
var (
	binDir   string
	binOnce  sync.Once
	binPath  string
	binError error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// kbsBinary builds the real kbs binary once per test run (only when a test
// needs the process) and returns its path.
func kbsBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binError = os.MkdirTemp("", "kbs-bin-")
		if binError != nil {
			return
		}
		binPath = filepath.Join(binDir, "kbs")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binError = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binError != nil {
		t.Fatal(binError)
	}
	return binPath
}

// runInProcess runs the kbs command line in this process with the given
// environment and returns the exit code, stdout and stderr.
func runInProcess(t testing.TB, environ map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := environ[k]; return v, ok }
	code := run(context.Background(), args, lookup, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// fixture is everything a running kbs needs: a data directory, dev
// certificates and a TDX simulator.
type fixture struct {
	dir     string // root of the fixture
	dataDir string
	certs   string
	simDir  string
	td      spiffeid.TrustDomain
	sim     *tdxsim.Simulator

	owner   testing.TB // sources are closed when the owner's test ends
	mu      sync.Mutex
	sources map[string]identity.Source
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), td: spiffeid.RequireTrustDomainFromString("example.org"), owner: t}
	f.dataDir = filepath.Join(f.dir, "data")
	f.certs = filepath.Join(f.dir, "certs")
	f.simDir = filepath.Join(f.dir, "tdxsim")
	if _, err := devca.WriteDir(f.certs, f.td, []string{"kbs", "admin", "loader", "auditor"}, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	sim, err := tdxsim.Init(f.simDir, tdxsim.Options{Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	f.sim = sim
	if code, _, stderr := runInProcess(t, nil, "init", "--data-dir", f.dataDir); code != 0 {
		t.Fatalf("kbs init: exit %d: %s", code, stderr)
	}
	return f
}

// serveArgs are the arguments of kbs serve for the fixture, on loopback
// ports chosen by the kernel.
func (f *fixture) serveArgs(extra ...string) []string {
	return append([]string{
		"serve",
		"--data-dir", f.dataDir,
		"--listen", "127.0.0.1:0",
		"--health-listen", "127.0.0.1:0",
		"--metrics-listen", "127.0.0.1:0",
		"--svid-cert", filepath.Join(f.certs, "kbs.pem"),
		"--svid-key", filepath.Join(f.certs, "kbs-key.pem"),
		"--bundle", filepath.Join(f.certs, devca.BundleFile),
		"--admin-ids", f.id("admin").String(),
		"--auditor-ids", f.id("auditor").String(),
		"--dev-insecure-simulated-tdx", f.simDir,
	}, extra...)
}

func (f *fixture) id(name string) spiffeid.ID {
	id, err := devca.IDForName(f.td, name)
	if err != nil {
		panic(err)
	}
	return id
}

// source returns the identity of a dev certs name (admin, loader, ...),
// opened once per fixture and closed when the fixture's test ends (not
// t's, which may be a subtest).
func (f *fixture) source(t testing.TB, name string) identity.Source {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if src := f.sources[name]; src != nil {
		return src
	}
	certFile, keyFile, err := devca.SVIDFiles(name)
	if err != nil {
		t.Fatal(err)
	}
	src, err := identity.Open(context.Background(), identity.Config{
		SVIDCert: filepath.Join(f.certs, certFile),
		SVIDKey:  filepath.Join(f.certs, keyFile),
		Bundle:   filepath.Join(f.certs, devca.BundleFile),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.owner.Cleanup(func() { src.Close() })
	if f.sources == nil {
		f.sources = map[string]identity.Source{}
	}
	f.sources[name] = src
	return src
}

// dial opens an mTLS connection to kbs as name.
func (f *fixture) dial(t testing.TB, addr, name string) *grpc.ClientConn {
	t.Helper()
	creds, err := identity.ClientCredentials(f.source(t, name), f.id("kbs"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// proc is a running kbs process.
type proc struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	stderr  bytes.Buffer
	lines   []map[string]any // JSON log lines
	serving chan map[string]any
	done    chan struct{}
	err     error // Wait's result, after done
	// quiet: log lines are neither parsed nor kept, beyond maxQuietOutput
	// bytes of output (see discardLogs).
	quiet bool
}

// maxQuietOutput bounds the output a quiet proc keeps, for diagnostics.
const maxQuietOutput = 1 << 20

// discardLogs stops parsing and keeping the process's log lines (the
// first MiB of output is still kept for failure messages). Benchmarks use
// it: kbs logs every RPC, and parsing and retaining those lines in the
// benchmark process would take CPU from the broker it measures and grow
// the benchmark's heap without bound.
func (p *proc) discardLogs() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.quiet = true
}

// start runs the kbs binary and returns once it logged "kbs serving" or
// failed.
func start(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	p := startNoWait(t, env, args...)
	select {
	case <-p.serving:
	case <-p.done:
		t.Fatalf("kbs exited before serving: %v\n%s", p.err, p.output())
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("kbs did not start serving within 30s:\n%s", p.output())
	}
	return p
}

func startNoWait(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(kbsBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, serving: make(chan map[string]any, 1), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			if p.quiet {
				if p.stderr.Len() < maxQuietOutput {
					p.stderr.Write(sc.Bytes())
					p.stderr.WriteByte('\n')
				}
				p.mu.Unlock()
				continue
			}
			line := sc.Text()
			p.stderr.WriteString(line + "\n")
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil {
				p.lines = append(p.lines, rec)
				if rec["msg"] == "kbs serving" {
					p.serving <- rec
				}
			}
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pipe)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// logLine returns the first JSON log line with msg.
func (p *proc) logLine(msg string) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if l["msg"] == msg {
			return l
		}
	}
	return nil
}

// addr returns a listen address the process logged ("grpc", "health",
// "metrics").
func (p *proc) addr(t testing.TB, name string) string {
	t.Helper()
	l := p.logLine("kbs serving")
	a, _ := l[name].(string)
	if a == "" {
		t.Fatalf("no %s address logged:\n%s", name, p.output())
	}
	return a
}

// stop sends sig and waits for the exit; it returns the exit code.
func (p *proc) stop(t testing.TB, sig syscall.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("kbs did not exit within 30s after %v:\n%s", sig, p.output())
	}
	return p.cmd.ProcessState.ExitCode()
}

// healthStatus asks the plaintext health service for service's status.
func healthStatus(ctx context.Context, addr, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return 0, err
	}
	return resp.Status, nil
}

// waitServing polls the health service until SERVING.
func waitServing(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := healthStatus(ctx, addr, "")
		cancel()
		if err == nil && st == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %s not SERVING: %v %v", addr, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
