package main

// Test fixtures shared by the tests of the commands that talk to the key
// broker: a real in-process broker (server.New) on a loopback listener with
// mTLS from a devca CA, a simulated TDX platform, and the connection flags
// of each identity.

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/cml-project/cml/client"
	"github.com/cml-project/cml/emdl"
	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/identity/devca"
	"github.com/cml-project/cml/server"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/server/store/storetest"
	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
	"github.com/cml-project/cml/tdx/verifier"
)

// testTD is the trust domain of the test identities.
const testTD = "example.org"

// simVerifier returns a quote verifier that trusts the simulator in simDir
// and serves its collateral offline.
func simVerifier(t *testing.T, simDir string) *verifier.Verifier {
	t.Helper()
	rootPEM, err := os.ReadFile(filepath.Join(simDir, tdxsim.RootFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(rootPEM)
	if block == nil {
		t.Fatal("no PEM in the simulator root")
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	g, err := collateral.New(collateral.Config{Dir: filepath.Join(simDir, tdxsim.CollateralDir), Offline: true, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	v, err := verifier.New(verifier.Config{Collateral: g, ExtraRoots: []*x509.Certificate{root}, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// newSim runs 'kbsctl dev tdxsim init' into a temp dir and returns it.
func newSim(t *testing.T, extra ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tdxsim")
	if r := kbsctl(t, append([]string{"dev", "tdxsim", "init", dir}, extra...)...); r.code != exitOK {
		t.Fatalf("tdxsim init: %v", r)
	}
	return dir
}

// broker is a running in-process key broker.
type broker struct {
	addr     string
	certs    string // devca directory: kbs, admin, auditor, loader
	simDir   string
	serverID string
}

// startBroker starts a broker on 127.0.0.1 with mTLS and a new store;
// admin is in AdminIDs, auditor in AuditorIDs, loader in neither.
func startBroker(t *testing.T) *broker {
	t.Helper()
	b := newBroker(t)
	b.serve(t, storetest.Open(t))
	return b
}

// newBroker writes the identities (kbs, admin, auditor, loader) and the
// simulated platform of a broker, without starting it.
func newBroker(t *testing.T) *broker {
	t.Helper()
	certs := filepath.Join(t.TempDir(), "certs")
	td := spiffeid.RequireTrustDomainFromString(testTD)
	if _, err := devca.WriteDir(certs, td, []string{"kbs", "admin", "auditor", "loader"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	return &broker{certs: certs, simDir: newSim(t), serverID: "spiffe://" + testTD + "/kbs"}
}

// serve starts the broker over st on a new loopback port and returns a
// function that stops it (also run by t.Cleanup).
func (b *broker) serve(t *testing.T, st *store.Store) (stop func()) {
	t.Helper()
	src, err := identity.Open(t.Context(), identity.Config{
		SVIDCert: filepath.Join(b.certs, "kbs.pem"),
		SVIDKey:  filepath.Join(b.certs, "kbs-key.pem"),
		Bundle:   filepath.Join(b.certs, devca.BundleFile),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{
		Store:      st,
		Verifier:   simVerifier(t, b.simDir),
		Simulated:  true,
		AdminIDs:   []string{"spiffe://" + testTD + "/admin"},
		AuditorIDs: []string{"spiffe://" + testTD + "/auditor"},
		Now:        time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := identity.ServerCredentials(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(append(srv.ServerOptions(), grpc.Creds(creds))...)
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	b.addr = lis.Addr().String()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			g.Stop()
			src.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// as returns args followed by the connection flags of identity name.
func (b *broker) as(name string, args ...string) []string {
	return append(slices.Clone(args),
		"--kbs", b.addr, "--kbs-spiffe-id", b.serverID,
		"--svid-cert", filepath.Join(b.certs, name+".pem"),
		"--svid-key", filepath.Join(b.certs, name+"-key.pem"),
		"--bundle", filepath.Join(b.certs, devca.BundleFile),
		"--timeout", "10s")
}

// run runs kbsctl as identity name against the broker.
func (b *broker) run(t *testing.T, name string, args ...string) result {
	t.Helper()
	return kbsctl(t, b.as(name, args...)...)
}

// mustRun runs kbsctl as admin and fails the test unless it exits 0.
func (b *broker) mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := b.run(t, "admin", args...)
	if r.code != exitOK {
		t.Fatalf("kbsctl %q: %v", args, r)
	}
	return r
}

// quote writes a simulated quote of the broker's platform to a temp file.
func (b *broker) quote(t *testing.T, extra ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "td.quote")
	if r := kbsctl(t, append([]string{"dev", "tdxsim", "quote", "--dir", b.simDir, "--out", out}, extra...)...); r.code != exitOK {
		t.Fatalf("tdxsim quote: %v", r)
	}
	return out
}

// cliCase is one invocation and what it must print on stderr.
type cliCase struct {
	who  string // identity: admin, auditor, loader
	args []string
	code int
	msg  string // substring of stderr
}

// check runs every case against b.
func (b *broker) check(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, tc := range cases {
		r := b.run(t, tc.who, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%s: kbsctl %q: want exit %d and %q: %v", tc.who, tc.args, tc.code, tc.msg, r)
		}
		if tc.code != exitOK && r.stdout != "" && tc.code != exitRefused {
			t.Errorf("%s: kbsctl %q: failed but wrote to stdout: %q", tc.who, tc.args, r.stdout)
		}
	}
}

// tempFile writes data to name in a new temp dir and returns its path.
func tempFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// exportKey gets version of keyID from the broker as the admin, in memory.
func (b *broker) exportKey(t *testing.T, keyID string, version uint32) *client.ReleasedKey {
	t.Helper()
	c, err := client.New(t.Context(), b.addr,
		client.WithServerID(spiffeid.RequireFromString(b.serverID)),
		client.WithSVIDFiles(filepath.Join(b.certs, "admin.pem"), filepath.Join(b.certs, "admin-key.pem"), filepath.Join(b.certs, devca.BundleFile)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rk, err := c.ExportKey(t.Context(), keyID, version)
	if err != nil {
		t.Fatalf("export %s version %d: %v", keyID, version, err)
	}
	return rk
}

// decryptWithExport decrypts the model enc with version of keyID exported
// from the broker (never written to disk) and checks that the model says
// it was encrypted under that key id and version. It returns the output
// directory.
func decryptWithExport(t *testing.T, b *broker, keyID string, version uint32, enc string) string {
	t.Helper()
	rk := b.exportKey(t, keyID, version)
	defer rk.Zero()
	out := filepath.Join(t.TempDir(), "plain")
	if _, err := emdl.Decrypt(t.Context(), rk.Key, enc, out, emdl.DecryptOptions{KeyID: keyID, KeyVersion: version}); err != nil {
		t.Fatalf("decrypt %s with %s version %d from the broker: %v", enc, keyID, version, err)
	}
	return out
}

// defaultPolicy is a policy that allows the loader in the simulator's
// default TD.
func defaultPolicy() string {
	td := tdxsim.DefaultTDParams().JSON()
	return `{
  "spiffe_ids": ["spiffe://` + testTD + `/loader"],
  "mrtd": ["` + td.MRTD + `"],
  "rtmr0": ["` + td.RTMR[0] + `"]
}`
}
