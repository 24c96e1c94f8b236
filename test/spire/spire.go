package spire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// DefaultTrustDomain is the trust domain of Config's zero value.
	DefaultTrustDomain = "cml.test"
	// DefaultX509SVIDTTL is the server's default X.509-SVID lifetime.
	DefaultX509SVIDTTL = time.Hour
	// DefaultReadyTimeout bounds the wait for the server and the agent.
	DefaultReadyTimeout = time.Minute

	// cliTimeout bounds one spire-server or spire-agent CLI call.
	cliTimeout = 30 * time.Second
	// maxSocketPath is the longest unix socket path Linux accepts
	// (sizeof sun_path minus the terminating NUL).
	maxSocketPath = 107
)

// Config configures Start.
type Config struct {
	// BinDir holds spire-server and spire-agent (scripts/spire/install.sh
	// prints it). Required.
	BinDir string
	// TrustDomain defaults to DefaultTrustDomain.
	TrustDomain string
	// DefaultX509SVIDTTL is the server's default_x509_svid_ttl; 0 means
	// DefaultX509SVIDTTL. An entry may set its own (Entry.X509SVIDTTL).
	DefaultX509SVIDTTL time.Duration
	// ReadyTimeout bounds each wait for the server or the agent to become
	// ready; 0 means DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// SPIRE is a running SPIRE server and, after StartAgent, its agent.
type SPIRE struct {
	TrustDomain spiffeid.TrustDomain
	// Dir holds the configurations, data, sockets and logs.
	Dir string

	cfg          Config
	serverBin    string
	agentBin     string
	serverSocket string
	agentSocket  string
	bundlePath   string
	port         int
	joinToken    string
	agentID      spiffeid.ID
	server       *Process
	agent        *Process
}

// Entry is a registration entry for a workload on the agent.
type Entry struct {
	// ID is the SPIFFE ID the workload gets.
	ID spiffeid.ID
	// Path is the absolute path of the workload's executable, as the
	// kernel reports it (/proc/PID/exe: symlinks resolved). CreateEntry
	// resolves symlinks itself.
	Path string
	// X509SVIDTTL is the lifetime of the entry's X.509-SVIDs, in whole
	// seconds; 0 means the server's default.
	X509SVIDTTL time.Duration
}

// Start starts a SPIRE server and waits until it is healthy, then fetches
// its bundle and a join token for the agent. Register the workloads
// (CreateEntry) and then call StartAgent.
func Start(t testing.TB, cfg Config) *SPIRE {
	t.Helper()
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = DefaultTrustDomain
	}
	if cfg.DefaultX509SVIDTTL == 0 {
		cfg.DefaultX509SVIDTTL = DefaultX509SVIDTTL
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		t.Fatalf("spire: trust domain %q: %v", cfg.TrustDomain, err)
	}
	s := &SPIRE{TrustDomain: td, cfg: cfg}
	s.serverBin, s.agentBin = filepath.Join(cfg.BinDir, "spire-server"), filepath.Join(cfg.BinDir, "spire-agent")
	for _, b := range []string{s.serverBin, s.agentBin} {
		if fi, err := os.Stat(b); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("spire: %s is not an executable file (build it with scripts/spire/install.sh): %v", b, err)
		}
	}

	s.Dir = shortTempDir(t)
	s.serverSocket = filepath.Join(s.Dir, "server.sock")
	s.agentSocket = filepath.Join(s.Dir, "agent.sock")
	s.bundlePath = filepath.Join(s.Dir, "bundle.pem")
	if len(s.agentSocket) > maxSocketPath || len(s.serverSocket) > maxSocketPath {
		t.Fatalf("spire: socket path %s is longer than %d bytes", s.agentSocket, maxSocketPath)
	}
	for _, d := range []string{"server", "agent"} {
		if err := os.Mkdir(filepath.Join(s.Dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}

	// The port is picked by binding :0 and closing, so another process may
	// take it before the server binds it; then the server exits at once
	// and another port is tried.
	const attempts = 3
	start := time.Now()
	for i := 1; ; i++ {
		s.port = freePort(t)
		conf := filepath.Join(s.Dir, "server.conf")
		if err := os.WriteFile(conf, []byte(s.serverConf()), 0o600); err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(s.Dir, fmt.Sprintf("server-%d.log", i))
		s.server = StartProcess(t, "spire-server", logPath, nil, s.serverBin, "run", "-config", conf)
		err := s.waitReady(s.server, cfg.ReadyTimeout, s.serverBin, "healthcheck", "-socketPath", s.serverSocket)
		if err == nil {
			break
		}
		if i < attempts && strings.Contains(Tail(logPath, 20), "address already in use") {
			t.Logf("spire: port %d was taken; trying another", s.port)
			continue
		}
		t.Fatalf("spire: server: %v\n%s", err, Tail(logPath, 40))
	}
	t.Logf("spire: server %s on 127.0.0.1:%d ready after %v", td.Name(), s.port, time.Since(start).Round(time.Millisecond))

	bundle, err := s.serverCLI("bundle", "show", "-format", "pem")
	if err != nil {
		t.Fatalf("spire: bundle show: %v", err)
	}
	if err := os.WriteFile(s.bundlePath, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := s.serverCLI("token", "generate", "-ttl", "600", "-output", "json")
	if err != nil {
		t.Fatalf("spire: token generate: %v", err)
	}
	if s.joinToken, err = parseJoinToken(out); err != nil {
		t.Fatalf("spire: token generate: %v", err)
	}
	if s.agentID, err = spiffeid.FromSegments(td, "spire", "agent", "join_token", s.joinToken); err != nil {
		t.Fatalf("spire: agent ID from join token: %v", err)
	}

	// spire-agent's own "api fetch x509" is the last readiness check of
	// StartAgent: it succeeds once the agent serves SVIDs from synced
	// entries.
	s.CreateEntry(t, Entry{ID: s.ID("test/spire-agent-cli"), Path: s.agentBin})
	return s
}

// ID returns the SPIFFE ID with path p in the trust domain (p without the
// leading slash, e.g. "kbs").
func (s *SPIRE) ID(p string) spiffeid.ID {
	id, err := spiffeid.FromPath(s.TrustDomain, "/"+p)
	if err != nil {
		panic(fmt.Sprintf("spire: bad SPIFFE ID path %q: %v", p, err))
	}
	return id
}

// AgentID is the SPIFFE ID the agent gets from its join token, the parent
// of every entry.
func (s *SPIRE) AgentID() spiffeid.ID { return s.agentID }

// WorkloadAPI is the agent's Workload API address, "unix:///...".
func (s *SPIRE) WorkloadAPI() string { return "unix://" + s.agentSocket }

// BundlePath is the PEM file of the trust domain's CA certificates.
func (s *SPIRE) BundlePath() string { return s.bundlePath }

// Bundle loads BundlePath.
func (s *SPIRE) Bundle(t testing.TB) *x509bundle.Bundle {
	t.Helper()
	b, err := x509bundle.Load(s.TrustDomain, s.bundlePath)
	if err != nil {
		t.Fatalf("spire: %v", err)
	}
	return b
}

// Server and Agent are the processes (Agent is nil before StartAgent).
func (s *SPIRE) Server() *Process { return s.server }
func (s *SPIRE) Agent() *Process  { return s.agent }

// CreateEntry registers e under the agent and returns the entry's id.
func (s *SPIRE) CreateEntry(t testing.TB, e Entry) string {
	t.Helper()
	path, err := filepath.EvalSymlinks(e.Path)
	if err != nil {
		t.Fatalf("spire: entry for %s: %v", e.ID, err)
	}
	if !filepath.IsAbs(path) {
		t.Fatalf("spire: entry for %s: workload path %q is not absolute", e.ID, path)
	}
	args := []string{"entry", "create",
		"-parentID", s.agentID.String(),
		"-spiffeID", e.ID.String(),
		"-selector", "unix:path:" + path,
		"-output", "json"}
	if e.X509SVIDTTL != 0 {
		secs := int(e.X509SVIDTTL / time.Second)
		if secs <= 0 || e.X509SVIDTTL%time.Second != 0 {
			t.Fatalf("spire: entry for %s: X509SVIDTTL %v is not a positive whole number of seconds", e.ID, e.X509SVIDTTL)
		}
		args = append(args, "-x509SVIDTTL", strconv.Itoa(secs))
	}
	out, err := s.serverCLI(args...)
	if err != nil {
		t.Fatalf("spire: entry create %s: %v", e.ID, err)
	}
	id, err := parseEntryCreate(out)
	if err != nil {
		t.Fatalf("spire: entry create %s: %v", e.ID, err)
	}
	return id
}

// DeleteEntry deletes the entry with the given id. The agent drops the
// workload's SVID at its next sync (within seconds).
func (s *SPIRE) DeleteEntry(t testing.TB, entryID string) {
	t.Helper()
	if _, err := s.serverCLI("entry", "delete", "-entryID", entryID); err != nil {
		t.Fatalf("spire: entry delete %s: %v", entryID, err)
	}
}

// StartAgent starts the agent and waits until it is healthy and serves
// SVIDs on its Workload API.
func (s *SPIRE) StartAgent(t testing.TB) {
	t.Helper()
	if s.agent != nil {
		t.Fatal("spire: the agent was already started")
	}
	conf := filepath.Join(s.Dir, "agent.conf")
	if err := os.WriteFile(conf, []byte(s.agentConf()), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(s.Dir, "agent.log")
	start := time.Now()
	s.agent = StartProcess(t, "spire-agent", logPath, nil, s.agentBin, "run", "-config", conf)
	if err := s.waitReady(s.agent, s.cfg.ReadyTimeout, s.agentBin, "healthcheck", "-socketPath", s.agentSocket); err != nil {
		t.Fatalf("spire: agent: %v\n%s", err, Tail(logPath, 40))
	}
	if err := s.waitReady(s.agent, s.cfg.ReadyTimeout, s.agentBin, "api", "fetch", "x509", "-socketPath", s.agentSocket, "-silent", "-timeout", "2s"); err != nil {
		t.Fatalf("spire: agent Workload API: %v\n%s", err, Tail(logPath, 40))
	}
	t.Logf("spire: agent %s serving the Workload API after %v", s.agentID, time.Since(start).Round(time.Millisecond))
}

// serverConf is the server's configuration: loopback only, SQLite, join
// tokens, disk keys, entry cache reloaded every second.
func (s *SPIRE) serverConf() string {
	d := filepath.Join(s.Dir, "server")
	return fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "DEBUG"
  ca_key_type = "ec-p256"
  ca_ttl = "24h"
  default_x509_svid_ttl = %q
  experimental {
    cache_reload_interval = "1s"
  }
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "disk" {
    plugin_data {
      keys_path = %q
    }
  }
}
`, s.port, s.serverSocket, s.TrustDomain.Name(), d, s.cfg.DefaultX509SVIDTTL.String(),
		filepath.Join(d, "datastore.sqlite3"), filepath.Join(d, "keys.json"))
}

// agentConf is the agent's configuration: join token, the server's bundle,
// disk keys, unix workload attestation by executable path, sync every
// second.
func (s *SPIRE) agentConf() string {
	d := filepath.Join(s.Dir, "agent")
	return fmt.Sprintf(`agent {
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = %q
  trust_bundle_path = %q
  join_token = %q
  data_dir = %q
  log_level = "DEBUG"
  experimental {
    sync_interval = "1s"
  }
}

plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "disk" {
    plugin_data {
      directory = %q
    }
  }
  WorkloadAttestor "unix" {
    plugin_data {
      discover_workload_path = true
    }
  }
}
`, s.port, s.agentSocket, s.TrustDomain.Name(), s.bundlePath, s.joinToken, d, d)
}

// waitReady runs the check command until it succeeds, p exits, or timeout.
func (s *SPIRE) waitReady(p *Process, timeout time.Duration, bin string, args ...string) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s (pid %d) exited while starting: %v", p.Name, p.PID(), err)
		}
		_, last = runCLI(bin, args...)
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %s %s: %v", p.Name, timeout, filepath.Base(bin), strings.Join(args, " "), last)
		}
		select {
		case <-p.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *SPIRE) serverCLI(args ...string) ([]byte, error) {
	// -socketPath goes right after the subcommand words, before the flags.
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		i++
	}
	full := append(append(append([]string{}, args[:i]...), "-socketPath", s.serverSocket), args[i:]...)
	return runCLI(s.serverBin, full...)
}

// runCLI runs a SPIRE CLI command and returns its stdout; the error has
// the exit status and stderr.
func runCLI(bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()+" "+stdout.String()))
	}
	return stdout.Bytes(), nil
}

// parseJoinToken reads the output of "spire-server token generate -output
// json".
func parseJoinToken(out []byte) (string, error) {
	var v struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return "", fmt.Errorf("unexpected output %.200q: %w", out, err)
	}
	if v.Value == "" || strings.ContainsAny(v.Value, "/\x00") {
		return "", fmt.Errorf("unexpected token %.100q in output", v.Value)
	}
	return v.Value, nil
}

// parseEntryCreate reads the output of "spire-server entry create -output
// json" for one entry and returns the new entry's id.
func parseEntryCreate(out []byte) (string, error) {
	var v struct {
		Results []struct {
			Status struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"status"`
			Entry struct {
				ID string `json:"id"`
			} `json:"entry"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return "", fmt.Errorf("unexpected output %.200q: %w", out, err)
	}
	if len(v.Results) != 1 {
		return "", fmt.Errorf("%d results in output, want 1", len(v.Results))
	}
	r := v.Results[0]
	if r.Status.Code != 0 {
		return "", fmt.Errorf("status %d: %s", r.Status.Code, r.Status.Message)
	}
	if r.Entry.ID == "" {
		return "", errors.New("no entry id in output")
	}
	return r.Entry.ID, nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// shortTempDir makes a temporary directory whose path is short enough for
// unix sockets inside it (t.TempDir's can be long), removed when t ends.
func shortTempDir(t testing.TB) string {
	t.Helper()
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "spire-")
	if err != nil {
		t.Fatal(err)
	}
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("spire: remove %s: %v", dir, err)
		}
	})
	return dir
}
