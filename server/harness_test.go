package server_test

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/identity/devca"
	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/server/store/storetest"
	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
	"github.com/cml-project/cml/tdx/verifier"
)

// simEpoch is when the simulated platform's certificates and collateral are
// issued; the verifier's clock is pinned an hour later.
var simEpoch = time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// Identities used by the tests.
var (
	kbsID     = spiffeid.RequireFromPath(td, "/kbs")
	adminID   = spiffeid.RequireFromPath(td, "/admin")
	auditorID = spiffeid.RequireFromPath(td, "/audit/alice")
	loaderID  = spiffeid.RequireFromPath(td, "/ns/ml/sa/loader")
	loader2ID = spiffeid.RequireFromPath(td, "/ns/ml/sa/other")
	evilID    = spiffeid.RequireFromPath(td, "/ns/evil/sa/x")
)

const (
	x25519 = kbsv1.HpkeKem_HPKE_KEM_DHKEM_X25519_HKDF_SHA256
	mlkem  = kbsv1.HpkeKem_HPKE_KEM_MLKEM768_X25519
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type envOptions struct {
	sim        tdxsim.Options
	noSimRoot  bool // the verifier does not trust the simulator's root
	maxPer     int
	maxTotal   int
	maxRequest int
	register   func(*grpc.Server) // registers more services on the broker's server
}

// env is a running key broker on loopback mTLS: real keystore, real
// verifier over the simulator's collateral, devca SVIDs.
type env struct {
	t     *testing.T
	clock *clock
	st    *store.Store
	sim   *tdxsim.Simulator
	ca    *devca.CA
	addr  string
	logs  *syncBuffer
	srv   *server.Server
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.sim.Now.IsZero() {
		o.sim.Now = simEpoch
	}
	if o.sim.Seed == nil {
		o.sim.Seed = []byte("server-test-seed-0123456789abcdef")
	}
	sim, err := tdxsim.New(o.sim)
	if err != nil {
		t.Fatal(err)
	}
	colDir := t.TempDir()
	if err := sim.WriteCollateral(colDir); err != nil {
		t.Fatal(err)
	}
	verifyAt := func() time.Time { return simEpoch.Add(time.Hour) }
	getter, err := collateral.New(collateral.Config{Dir: colDir, Offline: true, Now: verifyAt})
	if err != nil {
		t.Fatal(err)
	}
	vcfg := verifier.Config{Collateral: getter, Now: verifyAt}
	if !o.noSimRoot {
		blk, _ := pem.Decode(sim.RootPEM())
		root, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		vcfg.ExtraRoots = []*x509.Certificate{root}
	}
	v, err := verifier.New(vcfg)
	if err != nil {
		t.Fatal(err)
	}

	clk := &clock{t: simEpoch.Add(2 * time.Hour)}
	st := storetest.OpenWith(t, store.Options{Now: clk.Now})
	logs := &syncBuffer{}
	srv, err := server.New(server.Config{
		Store:                  st,
		Verifier:               v,
		Simulated:              !o.noSimRoot,
		AdminIDs:               []string{adminID.String()},
		AuditorIDs:             []string{"spiffe://example.org/audit/*"},
		MaxChallengesPerCaller: o.maxPer,
		MaxChallenges:          o.maxTotal,
		MaxRequestBytes:        o.maxRequest,
		Now:                    clk.Now,
		Logger:                 slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}

	ca, err := devca.New(td, devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.Issue(kbsID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := identity.ServerCredentials(identity.NewStaticSource(svid, ca.Bundle()), nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(append(srv.ServerOptions(), grpc.Creds(creds))...)
	srv.Register(g)
	if o.register != nil {
		o.register(g)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return &env{t: t, clock: clk, st: st, sim: sim, ca: ca, addr: lis.Addr().String(), logs: logs, srv: srv}
}

// conn dials the broker as id.
func (e *env) conn(id spiffeid.ID) *grpc.ClientConn {
	e.t.Helper()
	svid, err := e.ca.Issue(id, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	creds, err := identity.ClientCredentials(identity.NewStaticSource(svid, e.ca.Bundle()), kbsID)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) admin() kbsv1.AdminServiceClient { return kbsv1.NewAdminServiceClient(e.conn(adminID)) }

func (e *env) broker(id spiffeid.ID) kbsv1.KeyBrokerServiceClient {
	return kbsv1.NewKeyBrokerServiceClient(e.conn(id))
}

// defaultPolicy pins the simulator's default TD and allows the ml namespace.
func (e *env) defaultPolicy() *kbsv1.Policy {
	d := e.sim.DefaultTD()
	return &kbsv1.Policy{
		SpiffeIds: []string{"spiffe://example.org/ns/ml/*"},
		Mrtd:      []string{hex.EncodeToString(d.MRTD[:])},
		Rtmr0:     []string{hex.EncodeToString(d.RTMR[0][:])},
		Rtmr1:     []string{hex.EncodeToString(d.RTMR[1][:])},
		Rtmr2:     []string{hex.EncodeToString(d.RTMR[2][:])},
	}
}

// createKey creates a key through AdminService and puts a policy on it.
func (e *env) createKey(id string, p *kbsv1.Policy) {
	e.t.Helper()
	ctx := context.Background()
	a := e.admin()
	if _, err := a.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: id}); err != nil {
		e.t.Fatalf("CreateKey(%s): %v", id, err)
	}
	if p != nil {
		if _, err := a.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: id, Policy: p}); err != nil {
			e.t.Fatalf("PutPolicy(%s): %v", id, err)
		}
	}
}

// dek returns a key version's bytes straight from the keystore.
func (e *env) dek(id string, version uint32) []byte {
	e.t.Helper()
	k, _, err := e.st.UnwrapKey(context.Background(), id, version)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

// attempt is one release: its inputs, which a test may alter.
type attempt struct {
	keyID   string
	version uint32
	kem     keyrelease.KEM
	td      tdxsim.TDParams
	nonce   []byte // from GetChallenge unless set
	quote   []byte // made over the proper REPORTDATA unless set
	rdPub   []byte // public key bound in REPORTDATA (default: the one sent)
}

type released struct {
	resp  *kbsv1.ReleaseKeyResponse
	priv  hpke.PrivateKey
	nonce []byte
}

// release runs GetChallenge → key pair → quote → ReleaseKey.
func (e *env) release(kb kbsv1.KeyBrokerServiceClient, a attempt) (released, error) {
	e.t.Helper()
	ctx := context.Background()
	if a.kem == 0 {
		a.kem = keyrelease.KEMX25519
	}
	if a.td == (tdxsim.TDParams{}) {
		a.td = e.sim.DefaultTD()
	}
	if a.nonce == nil {
		ch, err := kb.GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: a.keyID})
		if err != nil {
			return released{}, err
		}
		a.nonce = ch.Nonce
	}
	priv, pub, err := keyrelease.GenerateKey(a.kem)
	if err != nil {
		e.t.Fatal(err)
	}
	if a.quote == nil {
		rdPub := pub
		if a.rdPub != nil {
			rdPub = a.rdPub
		}
		if a.quote, err = e.sim.Quote(keyrelease.ReportData(a.nonce, a.kem, rdPub), a.td); err != nil {
			e.t.Fatal(err)
		}
	}
	resp, err := kb.ReleaseKey(ctx, &kbsv1.ReleaseKeyRequest{
		KeyId: a.keyID, KeyVersion: a.version, Nonce: a.nonce, Quote: a.quote,
		KemId: kbsv1.HpkeKem(a.kem), TeePublicKey: pub,
	})
	return released{resp: resp, priv: priv, nonce: a.nonce}, err
}

// open opens a released key as the loader would.
func open(t *testing.T, r released) []byte {
	t.Helper()
	sk := r.resp.GetSealedKey()
	k, err := keyrelease.Open(r.priv, keyrelease.ReleaseInfo(r.resp.GetKeyId(), r.resp.GetKeyVersion(), r.nonce), sk.GetEnc(), sk.GetCiphertext())
	if err != nil {
		t.Fatalf("open released key: %v", err)
	}
	return k
}

// wantDenied checks the status code, the reason code in the ErrorDetail,
// a request id, and that the message is just the reason code.
func wantDenied(t *testing.T, err error, code codes.Code, reason string) *kbsv1.ErrorDetail {
	t.Helper()
	if err == nil {
		t.Fatalf("call succeeded, want %s %s", code, reason)
	}
	st, _ := status.FromError(err)
	d := rpcstatus.DetailOf(err)
	if st.Code() != code || d.GetReasonCode() != reason {
		t.Fatalf("got %s %q (detail %v), want %s %s", st.Code(), st.Message(), d, code, reason)
	}
	if len(d.GetRequestId()) != 16 {
		t.Errorf("request id %q is not 16 hex characters", d.GetRequestId())
	}
	if code == codes.PermissionDenied && st.Message() != reason {
		t.Errorf("message %q is not just the reason code %q", st.Message(), reason)
	}
	return d
}

// records returns every audit record.
func (e *env) records() []audit.Record {
	e.t.Helper()
	var out []audit.Record
	var after uint64
	for {
		recs, err := e.st.ListAudit(context.Background(), audit.Filter{AfterSeq: after, Limit: store.MaxListLimit})
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, recs...)
		if len(recs) < store.MaxListLimit {
			return out
		}
		after = recs[len(recs)-1].Seq
	}
}

// recordFor returns the single audit record with the request id.
func (e *env) recordFor(requestID string) audit.Record {
	e.t.Helper()
	var found []audit.Record
	for _, r := range e.records() {
		if r.RequestID == requestID {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		e.t.Fatalf("%d audit records for request %s, want 1", len(found), requestID)
	}
	return found[0]
}

// checkNoSecrets fails if any secret appears in the logs or the audit log.
func (e *env) checkNoSecrets(secrets ...[]byte) {
	e.t.Helper()
	var auditText strings.Builder
	for _, r := range e.records() {
		raw, err := r.Encode()
		if err != nil {
			e.t.Fatal(err)
		}
		auditText.Write(raw)
		auditText.WriteString(strings.ToLower(hex.EncodeToString(raw)))
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"msg":"rpc"`) {
		e.t.Fatal("no log lines captured: the secret search would prove nothing")
	}
	for _, s := range secrets {
		if len(s) == 0 {
			continue
		}
		forms := []string{hex.EncodeToString(s), strings.ToUpper(hex.EncodeToString(s)), string(s),
			base64.StdEncoding.EncodeToString(s), base64.RawStdEncoding.EncodeToString(s), base64.RawURLEncoding.EncodeToString(s)}
		for _, form := range forms {
			if strings.Contains(logs, form) {
				e.t.Errorf("a secret appears in the log")
			}
			if strings.Contains(auditText.String(), form) {
				e.t.Errorf("a secret appears in the audit log")
			}
		}
	}
}

func isCode(err error, c codes.Code) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == c && !errors.Is(err, context.Canceled)
}

// newForeignConn dials the broker with an SVID of another trust domain
// (which itself trusts the broker's bundle).
func newForeignConn(t *testing.T, e *env) (*grpc.ClientConn, error) {
	t.Helper()
	otherTD := spiffeid.RequireTrustDomainFromString("other.org")
	ca, err := devca.New(otherTD, devca.Options{})
	if err != nil {
		return nil, err
	}
	svid, err := ca.Issue(spiffeid.RequireFromPath(otherTD, "/ns/ml/sa/loader"), time.Hour)
	if err != nil {
		return nil, err
	}
	bundles := x509bundle.NewSet(ca.Bundle(), e.ca.Bundle())
	creds, err := identity.ClientCredentials(identity.NewStaticSource(svid, bundles), kbsID)
	if err != nil {
		return nil, err
	}
	c, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// noVerifier refuses every quote; for tests that never reach verification.
type noVerifier struct{}

func (noVerifier) Verify(context.Context, []byte) (*verifier.Claims, error) {
	return nil, errors.New("test: no verifier")
}
