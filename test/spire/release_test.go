package spire_test

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cml-project/cml/test/spire"
)

const (
	// kbsSVIDTTL is the lifetime of the broker's SVIDs. The agent renews an
	// SVID once half its lifetime (which includes SPIRE's backdating of
	// NotBefore) is gone, so the broker's certificate changes every few
	// seconds.
	kbsSVIDTTL = 30 * time.Second
	keyID      = "spire-model"
	cliTimeout = time.Minute
)

// deployment is a SPIRE server and agent, a key broker that gets its SVID
// from the agent, and the registered paths of the admin CLI and loaders.
type deployment struct {
	spire  *spire.SPIRE
	bins   string
	kbs    *spire.Process
	addr   string // the broker's mTLS address
	simDir string
	mrtd   string
	// registered as spiffe://cml.test/loader, the ID the policy allows
	loader      string
	loaderEntry string
	// registered as spiffe://cml.test/intruder, an ID no policy names
	intruder string
	// the loader program at a path that has no registration entry
	unregistered string
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	cfg := spireConfig(t)
	bins := binaries(t)
	s := spire.Start(t, cfg)
	d := &deployment{spire: s, bins: bins, simDir: filepath.Join(s.Dir, "tdxsim")}

	var sim struct {
		TD struct {
			MRTD string `json:"mrtd"`
		} `json:"td"`
	}
	out := mustRun(t, cliTimeout, d.bin("kbsctl"), "dev", "tdxsim", "init", d.simDir, "--json")
	if err := json.Unmarshal([]byte(out), &sim); err != nil || len(sim.TD.MRTD) != 96 {
		t.Fatalf("kbsctl dev tdxsim init --json: %v\n%s", err, out)
	}
	d.mrtd = sim.TD.MRTD

	d.loader = d.bin("cml-loader")
	d.intruder = copyBinary(t, d.loader, filepath.Join(s.Dir, "intruder"))
	d.unregistered = copyBinary(t, d.loader, filepath.Join(s.Dir, "unregistered"))
	s.CreateEntry(t, spire.Entry{ID: s.ID("kbs"), Path: d.bin("kbs"), X509SVIDTTL: kbsSVIDTTL})
	s.CreateEntry(t, spire.Entry{ID: s.ID("kbsctl"), Path: d.bin("kbsctl")})
	d.loaderEntry = s.CreateEntry(t, spire.Entry{ID: s.ID("loader"), Path: d.loader})
	s.CreateEntry(t, spire.Entry{ID: s.ID("intruder"), Path: d.intruder})
	s.StartAgent(t)

	dataDir := filepath.Join(s.Dir, "kbs-data")
	mustRun(t, cliTimeout, d.bin("kbs"), "init", "--data-dir", dataDir)
	d.kbs, d.addr = startKBS(t, d.bin("kbs"), filepath.Join(s.Dir, "kbs.log"),
		"serve", "--data-dir", dataDir,
		"--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--metrics-listen", "",
		"--spiffe-socket", s.WorkloadAPI(),
		"--admin-ids", s.ID("kbsctl").String(),
		"--dev-insecure-simulated-tdx", d.simDir,
		"--shutdown-timeout", "5s")
	return d
}

func (d *deployment) bin(name string) string { return filepath.Join(d.bins, name) }

// kbsctl runs an admin command against the broker, as spiffe://cml.test/kbsctl.
func (d *deployment) kbsctl(t *testing.T, args ...string) string {
	t.Helper()
	return mustRun(t, cliTimeout, d.bin("kbsctl"), append(args,
		"--kbs", d.addr, "--kbs-spiffe-id", d.spire.ID("kbs").String(),
		"--spiffe-socket", d.spire.WorkloadAPI())...)
}

// startKBS starts kbs serve and waits for its "kbs serving" log line,
// which names the address it listens on.
func startKBS(t *testing.T, bin, logPath string, args ...string) (*spire.Process, string) {
	t.Helper()
	p := spire.StartProcess(t, "kbs", logPath, nil, bin, args...)
	var addr string
	eventually(t, time.Minute, 100*time.Millisecond, "kbs serving", func() error {
		if exited, err := p.Exited(); exited {
			t.Fatalf("kbs exited before serving: %v\n%s", err, spire.Tail(logPath, 30))
		}
		f, err := os.Open(logPath)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var rec struct {
				Msg  string `json:"msg"`
				GRPC string `json:"grpc"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "kbs serving" && rec.GRPC != "" {
				addr = rec.GRPC
				return nil
			}
		}
		return errors.New("no \"kbs serving\" line yet")
	})
	return p, addr
}

// brokerCertificate connects to the broker and returns the certificate it
// presents, verified as an X.509-SVID of spiffe://cml.test/kbs against
// the SPIRE bundle. The handshake itself then fails, since this client has
// no SVID to present; the server's certificate arrives before that.
func brokerCertificate(t *testing.T, addr string, bundle *x509bundle.Bundle, want spiffeid.ID) *x509.Certificate {
	t.Helper()
	var got *x509.Certificate
	var verr error
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below as an X.509-SVID
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs := make([]*x509.Certificate, 0, len(raw))
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					verr = err
					return err
				}
				certs = append(certs, c)
			}
			id, _, err := x509svid.Verify(certs, bundle)
			switch {
			case err != nil:
				verr = err
			case id != want:
				verr = fmt.Errorf("broker presents %s, want %s", id, want)
			default:
				got = certs[0]
			}
			return verr
		},
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, conf)
	if err == nil {
		conn.Close()
	}
	if verr != nil {
		t.Fatalf("broker certificate: %v", verr)
	}
	if got == nil {
		t.Fatalf("broker presented no certificate: %v", err)
	}
	return got
}

// writeModel writes a small model directory and returns the SHA-256 of
// each file by its relative path.
func writeModel(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string][]byte{
		"config.json":                 []byte(`{"architectures": ["TinyForCausalLM"], "hidden_size": 64}`),
		"tokenizer.json":              []byte(strings.Repeat(`{"token": "x"}`, 1000)),
		"model-00001-of-00001.bin":    deterministicBytes(3<<20 + 12345),
		"nested/generation_conf.json": []byte(`{"temperature": 0.7}`),
	}
	sums := map[string]string{}
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		sums[name] = hex.EncodeToString(s[:])
	}
	return sums
}

func deterministicBytes(n int) []byte {
	b := make([]byte, 0, n+sha256.Size)
	h := sha256.Sum256([]byte("cml spire test model"))
	for len(b) < n {
		b = append(b, h[:]...)
		h = sha256.Sum256(h[:])
	}
	return b[:n]
}

// treeSums returns the SHA-256 of every regular file under dir by its
// relative slash path.
func treeSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		s := sha256.Sum256(b)
		sums[filepath.ToSlash(rel)] = hex.EncodeToString(s[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

func sameSums(got, want map[string]string) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d files, want %d: %v", len(got), len(want), got)
	}
	for name, w := range want {
		if got[name] != w {
			return fmt.Errorf("%s: SHA-256 %q, want %s", name, got[name], w)
		}
	}
	return nil
}

func serialHex(n *big.Int) string { return n.Text(16) }

// runLoader runs the loader program at bin (the real cml-loader, or a copy
// of it at another path) as a workload of the agent and returns how it
// ended. timeout is its --timeout: the wait for the agent and the broker.
func (d *deployment) runLoader(t *testing.T, bin, src, dst string, timeout time.Duration) result {
	t.Helper()
	return run(t, timeout+cliTimeout, bin,
		"--kbs", d.addr, "--kbs-spiffe-id", d.spire.ID("kbs").String(),
		"--key", keyID, "--src", src, "--dst", dst,
		"--spiffe-socket", d.spire.WorkloadAPI(),
		"--quote-provider", "simulated", "--dev-insecure-simulated-tdx", d.simDir,
		"--timeout", timeout.String())
}

// requireLoader skips the test if cmd/cml-loader is still the placeholder.
func requireLoader(t *testing.T, bin string) {
	t.Helper()
	if r := run(t, cliTimeout, bin, "--help"); r.code != 0 || strings.Contains(r.stdout+r.stderr, "not yet implemented") {
		t.Skipf("needs the cml-loader command (cmd/cml-loader): %s --help: %v", bin, r)
	}
}

// Loader exit codes (loader.Exit*), part of cml-loader's contract.
const (
	exitDenied      = 3
	exitUnavailable = 4
)

// TestReleaseWithSPIRE runs the whole product on identities from a real
// SPIRE agent: kbs serves with its SVID from the Workload API, kbsctl
// (the admin) creates a key and a policy and encrypts a model, and
// cml-loader attests with a simulated TDX quote and decrypts the model.
// Then the broker's SVID rotates under it without a restart, and three
// workloads are refused: one whose SPIFFE ID no policy names, one without
// a registration entry, and the loader itself once its entry is deleted.
func TestReleaseWithSPIRE(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	s := d.spire
	bundle := s.Bundle(t)

	d.kbsctl(t, "key", "create", keyID, "--description", "SPIRE test model")
	policy := filepath.Join(s.Dir, "policy.json")
	p, err := json.Marshal(map[string]any{
		"spiffe_ids":         []string{s.ID("loader").String()},
		"mrtd":               []string{d.mrtd},
		"allowed_tcb_status": []string{"UpToDate"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(policy, p, 0o600); err != nil {
		t.Fatal(err)
	}
	d.kbsctl(t, "policy", "put", "--key", keyID, "--file", policy)
	modelDir, enc := filepath.Join(s.Dir, "model"), filepath.Join(s.Dir, "model.emdl")
	want := writeModel(t, modelDir)
	d.kbsctl(t, "model", "encrypt", "--key-id", keyID, "--in", modelDir, "--out", enc, "--quiet")
	if err := os.RemoveAll(modelDir); err != nil {
		t.Fatal(err)
	}

	first := brokerCertificate(t, d.addr, bundle, s.ID("kbs"))
	if lifetime := first.NotAfter.Sub(first.NotBefore); lifetime > kbsSVIDTTL+time.Minute {
		t.Fatalf("broker SVID lifetime %v: the entry's %v TTL was not applied", lifetime, kbsSVIDTTL)
	}

	requireLoader(t, d.loader)
	out := t.TempDir()
	release := func(t *testing.T, name string) {
		t.Helper()
		dst := filepath.Join(out, name)
		if r := d.runLoader(t, d.loader, enc, dst, 30*time.Second); r.code != 0 {
			t.Fatalf("cml-loader: %v", r)
		}
		if err := sameSums(treeSums(t, dst), want); err != nil {
			t.Fatalf("decrypted model: %v", err)
		}
	}

	t.Run("release", func(t *testing.T) {
		release(t, "first")
		// The broker saw the SPIFFE IDs SPIRE issued: the admin's on the
		// key's creation, the loader's on the release.
		recs := d.audit(t, "allow")
		for _, want := range []struct{ caller, op string }{
			{s.ID("kbsctl").String(), "CreateKey"},
			{s.ID("loader").String(), "ReleaseKey"},
		} {
			if !recs.has(want.caller, want.op) {
				t.Errorf("no allow record of %s by %s in the audit log: %+v", want.op, want.caller, recs)
			}
		}
	})

	t.Run("rotation", func(t *testing.T) {
		pid := d.kbs.PID()
		var next *x509.Certificate
		took := eventually(t, 2*kbsSVIDTTL, time.Second, "the broker presents a rotated SVID", func() error {
			next = brokerCertificate(t, d.addr, bundle, s.ID("kbs"))
			if next.SerialNumber.Cmp(first.SerialNumber) == 0 {
				return fmt.Errorf("still serial %s (not after %s)", serialHex(first.SerialNumber), first.NotAfter.Format(time.RFC3339))
			}
			return nil
		})
		t.Logf("broker SVID %s replaced by %s after %v", serialHex(first.SerialNumber), serialHex(next.SerialNumber), took.Round(time.Millisecond))
		if !next.NotAfter.After(first.NotAfter) {
			t.Errorf("rotated SVID expires %s, not after the first's %s", next.NotAfter, first.NotAfter)
		}
		// Once the first SVID has expired, a release still works: the
		// broker serves with what the agent gave it since.
		if wait := time.Until(first.NotAfter) + time.Second; wait > 0 {
			time.Sleep(wait)
		}
		release(t, "after-rotation")
		if exited, err := d.kbs.Exited(); exited || d.kbs.PID() != pid {
			t.Fatalf("kbs was restarted or exited (%v); rotation must not need a restart", err)
		}
	})

	t.Run("intruder denied", func(t *testing.T) {
		dst := filepath.Join(out, "intruder")
		r := d.runLoader(t, d.intruder, enc, dst, 30*time.Second)
		if r.code != exitDenied {
			t.Fatalf("a workload with an SVID the policy does not name: want exit %d (denied), got %v", exitDenied, r)
		}
		if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("denied loader left %s: %v", dst, err)
		}
		// The broker refuses an ID that no policy names already at
		// GetChallenge, before any quote is made.
		if recs := d.audit(t, "deny"); !recs.has(s.ID("intruder").String(), "") {
			t.Errorf("no deny record with caller %s in the audit log: %+v", s.ID("intruder"), recs)
		}
	})

	t.Run("unregistered workload", func(t *testing.T) {
		dst := filepath.Join(out, "unregistered")
		start := time.Now()
		r := d.runLoader(t, d.unregistered, enc, dst, 5*time.Second)
		if r.code != exitUnavailable || !strings.Contains(r.stderr, noIdentity) {
			t.Fatalf("a workload without a registration entry: want exit %d (no SVID until --timeout) and the agent's %q, got %v", exitUnavailable, noIdentity, r)
		}
		t.Logf("unregistered loader gave up after %v: %s", time.Since(start).Round(time.Millisecond), lastLine(r.stderr))
		if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("refused loader left %s: %v", dst, err)
		}
	})

	t.Run("deleted entry", func(t *testing.T) {
		s.DeleteEntry(t, d.loaderEntry)
		n := 0
		var last result
		took := eventually(t, 30*time.Second, 500*time.Millisecond, "the agent drops the loader's entry", func() error {
			n++
			last = d.runLoader(t, d.loader, enc, filepath.Join(out, fmt.Sprintf("deleted-%d", n)), 3*time.Second)
			if last.code == 0 {
				return errors.New("the loader still gets its SVID and the model")
			}
			return nil
		})
		if last.code != exitUnavailable || !strings.Contains(last.stderr, noIdentity) {
			t.Fatalf("loader without its entry: want exit %d (no SVID until --timeout) and the agent's %q, got %v", exitUnavailable, noIdentity, last)
		}
		t.Logf("deleted entry: the loader had no identity %v after the deletion: %s", took.Round(time.Millisecond), lastLine(last.stderr))
	})
}

type auditRecords []struct {
	Caller    string `json:"caller_spiffe_id"`
	Operation string `json:"operation"`
	Decision  string `json:"decision"`
}

// has reports whether a record of operation op ("": any) by caller exists.
func (a auditRecords) has(caller, op string) bool {
	for _, r := range a {
		if r.Caller == caller && (op == "" || r.Operation == op) {
			return true
		}
	}
	return false
}

// audit lists the audit records about the test key with the decision
// ("allow" or "deny").
func (d *deployment) audit(t *testing.T, decision string) auditRecords {
	t.Helper()
	var out struct {
		Records auditRecords `json:"records"`
	}
	js := d.kbsctl(t, "audit", "list", "--key", keyID, "--decision", decision, "--json")
	if err := json.Unmarshal([]byte(js), &out); err != nil {
		t.Fatalf("kbsctl audit list --json: %v\n%s", err, js)
	}
	return out.Records
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
