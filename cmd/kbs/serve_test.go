package main

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/kek"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/tdx/collateral"
)

// parseServe parses a kbs serve command line and environment without
// running anything.
func parseServe(t *testing.T, environ map[string]string, args ...string) (*serveConfig, int, string) {
	t.Helper()
	var got *serveConfig
	c := serveCommandWith(func(_ context.Context, _ *env, cfg *serveConfig) error {
		got = cfg
		return nil
	})
	var stdout, stderr strings.Builder
	e := &env{
		lookupEnv: func(k string) (string, bool) { v, ok := environ[k]; return v, ok },
		stdout:    &stdout, stderr: &stderr, now: time.Now,
	}
	code := e.report(dispatch(context.Background(), e, []*command{c}, append([]string{"serve"}, args...)))
	return got, code, stderr.String()
}

var filesIdentity = []string{"--svid-cert", "c.pem", "--svid-key", "k.pem", "--bundle", "b.pem"}

func TestServeDefaults(t *testing.T) {
	cfg, code, stderr := parseServe(t, nil, append([]string{"--data-dir", "/d"}, filesIdentity...)...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := serveConfig{
		dataDir: "/d", listen: ":8443", healthListen: ":8081", metricsListen: ":9090",
		svidCert: "c.pem", svidKey: "k.pem", bundle: "b.pem",
		pcsURL: collateral.DefaultPCSURL, collateralCache: filepath.Join("/d", "collateral"),
		challengeTTL: 60 * time.Second, maxRequestBytes: defaultMaxRequestBytes,
		maxChallengesPerCaller: 16, maxChallenges: 100_000,
		shutdownTimeout: defaultShutdownTimeout,
	}
	if !equalConfig(cfg, &want) {
		t.Errorf("got %+v\nwant %+v", *cfg, want)
	}
}

func equalConfig(a, b *serveConfig) bool {
	return a.dataDir == b.dataDir && a.listen == b.listen && a.healthListen == b.healthListen &&
		a.metricsListen == b.metricsListen && a.spiffeSocket == b.spiffeSocket && a.svidCert == b.svidCert &&
		a.svidKey == b.svidKey && a.bundle == b.bundle && slices.Equal(a.adminIDs, b.adminIDs) &&
		slices.Equal(a.auditorIDs, b.auditorIDs) && a.kekFile == b.kekFile && a.collateralDir == b.collateralDir &&
		a.pcsURL == b.pcsURL && a.pccsURL == b.pccsURL && a.pccsCA == b.pccsCA &&
		a.collateralCache == b.collateralCache && a.challengeTTL == b.challengeTTL &&
		a.maxRequestBytes == b.maxRequestBytes && a.maxChallengesPerCaller == b.maxChallengesPerCaller &&
		a.maxChallenges == b.maxChallenges && a.logLevel == b.logLevel && a.devSimDir == b.devSimDir &&
		a.shutdownTimeout == b.shutdownTimeout && a.pprofListen == b.pprofListen
}

func TestServeEnvAndPrecedence(t *testing.T) {
	environ := map[string]string{
		"KBS_DATA_DIR":       "/env",
		"KBS_SPIFFE_SOCKET":  "unix:///run/agent.sock",
		"KBS_LISTEN":         "127.0.0.1:1",
		"KBS_METRICS_LISTEN": "", // set but empty: metrics disabled
		"KBS_ADMIN_IDS":      "spiffe://example.org/a, spiffe://example.org/ops/*",
		"KBS_CHALLENGE_TTL":  "30s",
		"KBS_LOG_LEVEL":      "debug",
		"KBS_PCCS_URL":       "https://pccs.example:8081",
		// 64 loader pods sharing one SPIFFE ID and starting together.
		"KBS_MAX_CHALLENGES_PER_CALLER": "64",
		"KBS_MAX_CHALLENGES":            "500000",
	}
	cfg, code, stderr := parseServe(t, environ, "--listen", "127.0.0.1:2", "--challenge-ttl", "10s", "--max-challenges", "1000")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if cfg.dataDir != "/env" || cfg.spiffeSocket != "unix:///run/agent.sock" || cfg.metricsListen != "" {
		t.Errorf("environment not used: %+v", *cfg)
	}
	if cfg.listen != "127.0.0.1:2" || cfg.challengeTTL != 10*time.Second {
		t.Errorf("the flag must win over the environment: listen %q ttl %s", cfg.listen, cfg.challengeTTL)
	}
	if cfg.maxChallengesPerCaller != 64 || cfg.maxChallenges != 1000 {
		t.Errorf("max challenges per caller %d (want 64 from the environment), total %d (want 1000 from the flag)",
			cfg.maxChallengesPerCaller, cfg.maxChallenges)
	}
	if !slices.Equal(cfg.adminIDs, []string{"spiffe://example.org/a", "spiffe://example.org/ops/*"}) {
		t.Errorf("admin ids %q", cfg.adminIDs)
	}
	if cfg.logLevel.String() != "DEBUG" || cfg.pccsURL != "https://pccs.example:8081" || cfg.pcsURL != "" {
		t.Errorf("log level %s, pccs %q, pcs %q", cfg.logLevel, cfg.pccsURL, cfg.pcsURL)
	}
}

func TestServeCollateralModes(t *testing.T) {
	base := append([]string{"--data-dir", "/d"}, filesIdentity...)
	cfg, code, _ := parseServe(t, nil, append(base, "--collateral-dir", "/c")...)
	if code != exitOK || cfg.collateralDir != "/c" || cfg.pcsURL != "" || cfg.collateralCache != "" {
		t.Errorf("collateral-dir: %d %+v", code, cfg)
	}
	cfg, code, _ = parseServe(t, nil, append(base, "--dev-insecure-simulated-tdx", "/sim")...)
	if code != exitOK || cfg.devSimDir != "/sim" || cfg.pcsURL != "" || cfg.collateralCache != "" {
		t.Errorf("simulator: %d %+v", code, cfg)
	}
	cfg, code, _ = parseServe(t, nil, append(base, "--dev-insecure-simulated-tdx", "/sim", "--collateral-dir", "/c")...)
	if code != exitOK || cfg.collateralDir != "/c" {
		t.Errorf("simulator with collateral-dir: %d %+v", code, cfg)
	}
	cfg, code, _ = parseServe(t, nil, append(base, "--pccs-url", "https://p:1", "--pccs-ca", "ca.pem", "--collateral-cache", "/cache")...)
	if code != exitOK || cfg.pccsURL != "https://p:1" || cfg.pccsCA != "ca.pem" || cfg.collateralCache != "/cache" {
		t.Errorf("pccs: %d %+v", code, cfg)
	}
}

func TestServeUsageErrors(t *testing.T) {
	base := []string{"--data-dir", "/d"}
	ident := append(slices.Clone(base), filesIdentity...)
	for _, tc := range []struct {
		name    string
		environ map[string]string
		args    []string
		want    string
	}{
		{"no data dir", nil, filesIdentity, "--data-dir is required"},
		{"no identity", nil, base, "no identity"},
		{"two identities", nil, append(slices.Clone(ident), "--spiffe-socket", "/s"), "exactly one"},
		{"partial files", nil, append(slices.Clone(base), "--svid-cert", "c"), "needs all of"},
		{"identity via env conflicts", map[string]string{"KBS_SPIFFE_SOCKET": "/s"}, ident, "exactly one"},
		{"bad admin id", nil, append(slices.Clone(ident), "--admin-ids", "admin"), `--admin-ids: "admin" is not a SPIFFE ID`},
		{"bad auditor id", nil, append(slices.Clone(ident), "--auditor-ids", "spiffe://x/a,http://y"), "--auditor-ids"},
		{"two collateral sources", nil, append(slices.Clone(ident), "--collateral-dir", "/c", "--pcs-url", "https://x"), "exclusive"},
		{"pccs ca without pccs", nil, append(slices.Clone(ident), "--pccs-ca", "ca.pem"), "--pccs-ca is only used with --pccs-url"},
		{"cache offline", nil, append(slices.Clone(ident), "--collateral-dir", "/c", "--collateral-cache", "/x"), "--collateral-cache is only used"},
		{"bad pcs url", nil, append(slices.Clone(ident), "--pcs-url", "ftp://x"), "not an http(s) URL"},
		{"empty listen", nil, append(slices.Clone(ident), "--listen", ""), "--listen must not be empty"},
		{"bad listen", nil, append(slices.Clone(ident), "--listen", "8443"), "not a host:port"},
		{"bad pprof listen", nil, append(slices.Clone(ident), "--pprof-listen", "6060"), "--pprof-listen \"6060\" is not a host:port"},
		{"pprof on all interfaces", nil, append(slices.Clone(ident), "--pprof-listen", ":6060"), "--pprof-listen \":6060\" must be a loopback IP address"},
		{"pprof on a public address", nil, append(slices.Clone(ident), "--pprof-listen", "192.0.2.1:6060"), "must be a loopback IP address"},
		{"pprof by host name", map[string]string{"KBS_PPROF_LISTEN": "localhost:6060"}, ident, "must be a loopback IP address"},
		{"ttl zero", nil, append(slices.Clone(ident), "--challenge-ttl", "0s"), "--challenge-ttl"},
		{"ttl env garbage", map[string]string{"KBS_CHALLENGE_TTL": "soon"}, ident, "environment variable KBS_CHALLENGE_TTL"},
		{"small requests", nil, append(slices.Clone(ident), "--max-request-bytes", "1000"), "--max-request-bytes"},
		{"per caller zero", nil, append(slices.Clone(ident), "--max-challenges-per-caller", "0"), "--max-challenges-per-caller 0 is out of range [1, 100000]"},
		{"per caller negative", nil, append(slices.Clone(ident), "--max-challenges-per-caller=-1"), "--max-challenges-per-caller -1 is out of range"},
		{"per caller above total", nil, append(slices.Clone(ident), "--max-challenges", "10", "--max-challenges-per-caller", "11"), "--max-challenges-per-caller 11 is out of range [1, 10]"},
		{"per caller above default total", map[string]string{"KBS_MAX_CHALLENGES_PER_CALLER": "100001"}, ident, "--max-challenges-per-caller 100001 is out of range"},
		{"per caller env garbage", map[string]string{"KBS_MAX_CHALLENGES_PER_CALLER": "many"}, ident, "environment variable KBS_MAX_CHALLENGES_PER_CALLER"},
		{"total zero", nil, append(slices.Clone(ident), "--max-challenges", "0"), "--max-challenges 0 is out of range [1, 1000000]"},
		{"total too large", map[string]string{"KBS_MAX_CHALLENGES": "1000001"}, ident, "--max-challenges 1000001 is out of range"},
		{"total overflows", nil, append(slices.Clone(ident), "--max-challenges", "99999999999999999999"), "--max-challenges"},
		{"log level", nil, append(slices.Clone(ident), "--log-level", "loud"), "--log-level"},
		{"log level offset", nil, append(slices.Clone(ident), "--log-level", "info+2"), "--log-level"},
		{"empty sim dir", nil, append(slices.Clone(ident), "--dev-insecure-simulated-tdx", ""), "needs the simulator directory"},
		{"shutdown timeout", nil, append(slices.Clone(ident), "--shutdown-timeout", "-1s"), "--shutdown-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, code, stderr := parseServe(t, tc.environ, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "kbs serve --help") {
				t.Errorf("exit %d, stderr %q, want %q", code, stderr, tc.want)
			}
		})
	}
}

func TestServeRefusesReadableKEK(t *testing.T) {
	f := newFixture(t)
	kekPath := store.KEKPath(f.dataDir)
	for _, m := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(kekPath, m); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := runInProcess(t, nil, f.serveArgs()...)
		if code != exitFailure || !containsAll(stderr, kekPath, "chmod 600") {
			t.Errorf("mode %04o: exit %d, stderr:\n%s", m, code, stderr)
		}
	}
}

func TestServeMissingDatabase(t *testing.T) {
	f := newFixture(t)
	if err := os.Remove(store.DBPath(f.dataDir)); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runInProcess(t, nil, f.serveArgs()...)
	if code != exitFailure || !containsAll(stderr, store.DBPath(f.dataDir), "kbs init") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

func TestServeKEKConflict(t *testing.T) {
	f := newFixture(t)
	code, _, stderr := runInProcess(t, map[string]string{kek.EnvVar: strings.Repeat("ab", 32)}, f.serveArgs("--kek-file", store.KEKPath(f.dataDir))...)
	if code != exitUsage || !strings.Contains(stderr, "both --kek-file and CML_KEK") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}

// testPolicy allows the fixture's loader in the simulator's default TD.
func (f *fixture) testPolicy() *kbsv1.Policy {
	td := f.sim.DefaultTD()
	return &kbsv1.Policy{
		SpiffeIds: []string{f.id("loader").String()},
		Mrtd:      []string{hex.EncodeToString(td.MRTD[:])},
	}
}

// release runs the whole release protocol as the loader does and returns
// the opened key.
func (f *fixture) release(ctx context.Context, kb kbsv1.KeyBrokerServiceClient, keyID string) ([]byte, error) {
	ch, err := kb.GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: keyID})
	if err != nil {
		return nil, err
	}
	priv, pub, err := keyrelease.GenerateKey(keyrelease.KEMX25519)
	if err != nil {
		return nil, err
	}
	quote, err := f.sim.Quote(keyrelease.ReportData(ch.Nonce, keyrelease.KEMX25519, pub), f.sim.DefaultTD())
	if err != nil {
		return nil, err
	}
	resp, err := kb.ReleaseKey(ctx, &kbsv1.ReleaseKeyRequest{
		KeyId: keyID, Nonce: ch.Nonce, Quote: quote,
		KemId: kbsv1.HpkeKem_HPKE_KEM_DHKEM_X25519_HKDF_SHA256, TeePublicKey: pub,
	})
	if err != nil {
		return nil, err
	}
	info := keyrelease.ReleaseInfo(resp.KeyId, resp.KeyVersion, ch.Nonce)
	return keyrelease.Open(priv, info, resp.SealedKey.Enc, resp.SealedKey.Ciphertext)
}

// TestServeProcess runs the real binary: init, serve with dev certificates
// and the TDX simulator, health, an admin call and a release over mTLS,
// /metrics, the challenge bound set on the command line, and SIGTERM with a
// clean exit and a closed database.
func TestServeProcess(t *testing.T) {
	f := newFixture(t)
	p := start(t, []string{"KBS_MAX_CHALLENGES=50"}, f.serveArgs("--max-challenges-per-caller", "1")...)
	healthAddr := p.addr(t, "health")
	waitServing(t, healthAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, svc := range []string{"cml.kbs.v1.KeyBrokerService", "cml.kbs.v1.AdminService"} {
		if st, err := healthStatus(ctx, healthAddr, svc); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %s: %v %v", svc, st, err)
		}
	}

	// The configuration line comes first and holds no secret.
	kekText, err := os.ReadFile(store.KEKPath(f.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	cfgLine := p.logLine("kbs starting")
	if cfgLine == nil || cfgLine["dev_insecure_simulated_tdx"] != true {
		t.Errorf("no configuration line: %v", cfgLine)
	}
	if cfgLine["max_challenges_per_caller"] != 1.0 || cfgLine["max_challenges"] != 50.0 {
		t.Errorf("configuration line: max_challenges_per_caller %v, max_challenges %v", cfgLine["max_challenges_per_caller"], cfgLine["max_challenges"])
	}
	if !containsAll(p.output(), "WARNING: kbs is running with --dev-insecure-simulated-tdx", "FOR TESTS AND DEMOS ONLY") {
		t.Error("no development warning")
	}

	grpcAddr := p.addr(t, "grpc")
	admin := kbsv1.NewAdminServiceClient(f.dial(t, grpcAddr, "admin"))
	if _, err := admin.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "llama", Description: "test"}); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if _, err := admin.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "llama", Policy: f.testPolicy()}); err != nil {
		t.Fatalf("PutPolicy: %v", err)
	}
	// The loader is not an admin.
	if _, err := kbsv1.NewAdminServiceClient(f.dial(t, grpcAddr, "loader")).CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "x"}); err == nil {
		t.Error("the loader could create a key")
	}
	kb := kbsv1.NewKeyBrokerServiceClient(f.dial(t, grpcAddr, "loader"))
	dek, err := f.release(ctx, kb, "llama")
	if err != nil {
		t.Fatalf("release: %v", err)
	}
	if len(dek) != store.DEKSize {
		t.Errorf("released key is %d bytes", len(dek))
	}
	// --max-challenges-per-caller 1 reached the broker: the release above
	// consumed its challenge, so one more is issued and a second refused.
	if _, err := kb.GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: "llama"}); err != nil {
		t.Fatalf("GetChallenge: %v", err)
	}
	_, err = kb.GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: "llama"})
	if reason := reasonOf(err); status.Code(err) != codes.ResourceExhausted || reason != "too_many_challenges" {
		t.Errorf("second outstanding challenge: %v (reason %q), want ResourceExhausted too_many_challenges", err, reason)
	}

	// /metrics.
	resp, err := http.Get("http://" + p.addr(t, "metrics") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`kbs_requests_total{method="/cml.kbs.v1.AdminService/CreateKey",code="OK"} 1`,
		`kbs_requests_total{method="/cml.kbs.v1.AdminService/CreateKey",code="PermissionDenied"} 1`,
		`kbs_requests_total{method="/cml.kbs.v1.KeyBrokerService/ReleaseKey",code="OK"} 1`,
		`kbs_requests_total{method="/cml.kbs.v1.KeyBrokerService/GetChallenge",code="ResourceExhausted"} 1`,
		`kbs_release_decisions_total{decision="allow",reason="ok"} 1`,
		`kbs_quote_verification_seconds_count 1`,
		`kbs_keys{state="enabled"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, text)
		}
	}

	// SIGTERM: exit 0 after a graceful shutdown, store closed last.
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, p.output())
	}
	out := p.output()
	if i, j := strings.Index(out, `"msg":"servers stopped"`), strings.Index(out, `"msg":"keystore closed"`); i < 0 || j < i {
		t.Errorf("shutdown order wrong:\n%s", out)
	}
	// No secret in the logs: not the KEK, not the released key.
	for name, secret := range map[string]string{"KEK": strings.TrimSpace(string(kekText)), "key": hex.EncodeToString(dek)} {
		if strings.Contains(strings.ToLower(out), secret) {
			t.Errorf("the %s appears in the logs", name)
		}
	}

	// The database was closed: it opens again (bbolt's lock is free), the
	// audit chain verifies and the release is marked simulated.
	p2, err := kek.LoadFile(store.KEKPath(f.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.DBPath(f.dataDir), store.Options{KEK: p2, Now: time.Now, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("database not closed: %v", err)
	}
	defer st.Close()
	if _, err := st.VerifyAudit(ctx); err != nil {
		t.Error(err)
	}
	recs, err := st.ListAudit(ctx, audit.Filter{Limit: store.MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	var sawRelease bool
	for _, r := range recs {
		if r.Operation == "ReleaseKey" || strings.HasSuffix(r.Operation, "/ReleaseKey") {
			sawRelease = true
			if !r.Simulated {
				t.Errorf("release record %d not marked simulated", r.Seq)
			}
		}
	}
	if !sawRelease {
		t.Error("no audit record of the release")
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("test ran out of time")
	}
}

// reasonOf returns the reason code of the broker's ErrorDetail in err.
func reasonOf(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ed, ok := d.(*kbsv1.ErrorDetail); ok {
			return ed.GetReasonCode()
		}
	}
	return ""
}

// TestServePortInUse: a listener that cannot bind fails the start with
// exit 1 naming the flag, and everything opened before is closed again.
func TestServePortInUse(t *testing.T) {
	f := newFixture(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	args := f.serveArgs()
	args = append(args, "--health-listen", busy.Addr().String())
	code, _, stderr := runInProcess(t, nil, args...)
	if code != exitFailure || !containsAll(stderr, "--health-listen", "address already in use", `"msg":"kbs stopped"`) {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	p, err := kek.LoadFile(store.KEKPath(f.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), store.DBPath(f.dataDir), store.Options{KEK: p, Now: time.Now, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("keystore left open: %v", err)
	}
	st.Close()
}

// TestServeSIGINT: SIGINT stops the process like SIGTERM, with exit 0.
func TestServeSIGINT(t *testing.T) {
	f := newFixture(t)
	p := start(t, nil, f.serveArgs()...)
	waitServing(t, p.addr(t, "health"))
	if code := p.stop(t, syscall.SIGINT); code != 0 {
		t.Fatalf("exit %d after SIGINT:\n%s", code, p.output())
	}
	if p.logLine("keystore closed") == nil {
		t.Errorf("no orderly shutdown:\n%s", p.output())
	}
}

// slowPCS is a collateral service serving the simulator's collateral, whose
// answers wait until release is closed: a ReleaseKey stays in flight while
// the test shuts kbs down.
type slowPCS struct {
	dir     string
	hit     chan struct{} // receives once per request
	release chan struct{}
}

func (s *slowPCS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case s.hit <- struct{}{}:
	default:
	}
	select {
	case <-s.release:
	case <-r.Context().Done():
		return
	}
	k, err := collateral.KeyForURL(r.URL.String())
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	e, err := collateral.ReadEntry(s.dir, k)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	for name, vs := range e.Header() {
		for _, v := range vs {
			w.Header().Add(name, v)
		}
	}
	w.Write(e.Body)
}

// TestServeGracefulShutdown: after SIGTERM health turns NOT_SERVING at once,
// a release in flight still completes, and kbs exits 0; with a short
// --shutdown-timeout an endless call is cut off and kbs still exits 0.
func TestServeGracefulShutdown(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout string
		finish  bool // let the in-flight call finish
	}{
		{"in-flight call completes", "20s", true},
		{"timeout cuts off", "500ms", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			pcs := &slowPCS{dir: filepath.Join(f.simDir, "collateral"), hit: make(chan struct{}, 1), release: make(chan struct{})}
			srv := httptest.NewServer(pcs)
			defer srv.Close()
			defer func() {
				select {
				case <-pcs.release:
				default:
					close(pcs.release)
				}
			}()
			p := start(t, nil, f.serveArgs("--pcs-url", srv.URL, "--shutdown-timeout", tc.timeout)...)
			healthAddr, grpcAddr := p.addr(t, "health"), p.addr(t, "grpc")
			waitServing(t, healthAddr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			admin := kbsv1.NewAdminServiceClient(f.dial(t, grpcAddr, "admin"))
			if _, err := admin.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "k"}); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: "k", Policy: f.testPolicy()}); err != nil {
				t.Fatal(err)
			}
			kb := kbsv1.NewKeyBrokerServiceClient(f.dial(t, grpcAddr, "loader"))
			result := make(chan error, 1)
			go func() {
				dek, err := f.release(ctx, kb, "k")
				clear(dek)
				result <- err
			}()
			select {
			case <-pcs.hit: // the release is waiting for collateral
			case <-time.After(20 * time.Second):
				t.Fatal("the release never fetched collateral")
			}

			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Second); ; {
				st, err := healthStatus(ctx, healthAddr, "")
				if err == nil && st == healthpb.HealthCheckResponse_NOT_SERVING {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("health still %v %v after SIGTERM", st, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			select {
			case <-p.done:
				t.Fatal("kbs exited with a call in flight")
			default:
			}

			if tc.finish {
				close(pcs.release)
				if err := <-result; err != nil {
					t.Errorf("the in-flight release failed: %v", err)
				}
			} else if err := <-result; err == nil {
				t.Error("the cut-off release succeeded")
			}
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				t.Fatal("kbs did not exit")
			}
			if code := p.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("exit %d:\n%s", code, p.output())
			}
			if timedOut := p.logLine("graceful stop timed out; closing the remaining connections") != nil; timedOut == tc.finish {
				t.Errorf("graceful stop timed out: %v:\n%s", timedOut, p.output())
			}
			if p.logLine("keystore closed") == nil {
				t.Errorf("keystore not closed:\n%s", p.output())
			}
		})
	}
}

// FuzzServeCommandLine: any command line and environment value gives a
// configuration or a usage error — never a panic, never another exit code.
func FuzzServeCommandLine(f *testing.F) {
	f.Add("--data-dir /d --svid-cert c --svid-key k --bundle b", "KBS_ADMIN_IDS", "spiffe://x/a,spiffe://x/b/*")
	f.Add("--data-dir /d --spiffe-socket /s --collateral-dir /c --pcs-url https://x", "KBS_LOG_LEVEL", "warn")
	f.Add("--data-dir=/d --spiffe-socket=/s --challenge-ttl=1h1s", "KBS_METRICS_LISTEN", "")
	f.Add("--help", "CML_KEK", "00")
	f.Add("--data-dir /d --spiffe-socket /s --max-challenges 8", "KBS_MAX_CHALLENGES_PER_CALLER", "9")
	f.Add("--data-dir /d --spiffe-socket /s --pprof-listen [::1]:6060", "KBS_PPROF_LISTEN", "0.0.0.0:6060")
	f.Fuzz(func(t *testing.T, line, envName, envValue string) {
		cfg, code, _ := parseServe(t, map[string]string{envName: envValue}, strings.Fields(line)...)
		switch code {
		case exitOK:
			if cfg == nil {
				return // --help
			}
			if cfg.dataDir == "" || cfg.listen == "" || cfg.healthListen == "" || cfg.challengeTTL <= 0 ||
				cfg.maxChallengesPerCaller < 1 || cfg.maxChallengesPerCaller > cfg.maxChallenges || cfg.maxChallenges > maxMaxChallenges ||
				(cfg.spiffeSocket == "") == (cfg.svidCert == "") {
				t.Errorf("accepted an invalid configuration: %+v", *cfg)
			}
			if cfg.pprofListen != "" {
				host, _, err := net.SplitHostPort(cfg.pprofListen)
				if ip, perr := netip.ParseAddr(host); err != nil || perr != nil || !ip.IsLoopback() {
					t.Errorf("accepted a non-loopback --pprof-listen %q", cfg.pprofListen)
				}
			}
		case exitUsage:
		default:
			t.Errorf("exit %d", code)
		}
	})
}

// TestServePprof: --pprof-listen serves Go's profiles on its own loopback
// listener, says so in the log, and nothing else serves them.
func TestServePprof(t *testing.T) {
	f := newFixture(t)
	p := start(t, nil, f.serveArgs("--pprof-listen", "127.0.0.1:0")...)
	addr := p.addr(t, "pprof")
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://" + addr + "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof index: %d %.200q", code, body)
	}
	if code, body := get("http://" + addr + "/debug/pprof/profile?seconds=1"); code != http.StatusOK || len(body) == 0 {
		t.Errorf("cpu profile: %d, %d bytes", code, len(body))
	}
	if code, _ := get("http://" + p.addr(t, "metrics") + "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("the metrics listener serves pprof: %d", code)
	}
	if !strings.Contains(p.output(), "serving Go profiles without authentication") {
		t.Error("no warning logged")
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d:\n%s", code, p.output())
	}
}
