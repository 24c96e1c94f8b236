package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cml-project/cml/identity"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server"
	"github.com/cml-project/cml/server/kek"
	"github.com/cml-project/cml/server/metrics"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
	"github.com/cml-project/cml/tdx/verifier"
)

// Defaults of kbs serve.
const (
	defaultListen          = ":8443"
	defaultHealthListen    = ":8081"
	defaultMetricsListen   = ":9090"
	defaultChallengeTTL    = 60 * time.Second
	defaultMaxRequestBytes = server.DefaultMaxRequestBytes
	defaultShutdownTimeout = 20 * time.Second
	collateralCacheName    = "collateral"
	httpTimeout            = 30 * time.Second
	minRequestBytes        = 128 << 10
	maxRequestBytes        = 64 << 20
	maxChallengeTTL        = time.Hour
	// Outstanding-challenge bounds. Each outstanding challenge (and each
	// remembered spent nonce, bounded by the same total) costs a few
	// hundred bytes, so the ceiling keeps the worst case well under 1 GiB.
	defaultMaxChallengesPerCaller = server.DefaultMaxChallengesPerCaller
	defaultMaxChallenges          = server.DefaultMaxChallenges
	maxMaxChallenges              = 1_000_000
	// streamWorkers is the number of gRPC stream workers (see runServe).
	streamWorkers = 64
)

// serveConfig is the parsed command line of kbs serve.
type serveConfig struct {
	dataDir         string
	listen          string
	healthListen    string
	metricsListen   string
	pprofListen     string // "": off; loopback only
	spiffeSocket    string
	svidCert        string
	svidKey         string
	bundle          string
	adminIDs        []string
	auditorIDs      []string
	kekFile         string
	collateralDir   string
	pcsURL          string
	pccsURL         string
	pccsCA          string
	collateralCache string
	challengeTTL    time.Duration
	maxRequestBytes int64
	// maxChallengesPerCaller and maxChallenges bound the outstanding
	// GetChallenge nonces of one SPIFFE ID and of all callers.
	maxChallengesPerCaller int64
	maxChallenges          int64
	logLevel               slog.Level
	devSimDir              string
	shutdownTimeout        time.Duration
}

// serveFlags are the raw flag values before validation.
type serveFlags struct {
	serveConfig
	adminIDs, auditorIDs, logLevel string
}

func serveCommand() *command { return serveCommandWith(runServe) }

// serveCommandWith is serve with another runner, so tests can check the
// parsed configuration.
func serveCommandWith(runner func(context.Context, *env, *serveConfig) error) *command {
	var f serveFlags
	return &command{
		name:     "serve",
		synopsis: "--data-dir DIR (--spiffe-socket ADDR | --svid-cert F --svid-key F --bundle F) [flags]",
		summary:  "run the key broker",
		help: `Runs the key broker: the KeyBrokerService and AdminService over mutual TLS
(gRPC) on --listen, the standard gRPC health service in PLAINTEXT on
--health-listen (for kubelet's gRPC probes, which cannot present an SVID;
SERVING once the keystore is open and the identity loaded, NOT_SERVING while
shutting down), and Prometheus metrics over HTTP on --metrics-listen
(/metrics).

Identity: either --spiffe-socket (the SPIRE agent's Workload API), or the
three files --svid-cert, --svid-key and --bundle, re-read when they change.

Collateral for TDX quote verification comes from exactly one of
--collateral-dir (imported files, offline: never touches the network),
--pcs-url (Intel PCS, the default) or --pccs-url (your PCCS); fetched
documents are cached in --collateral-cache.

The KEK is read from --kek-file, or from the CML_KEK environment variable,
or by default from DIR/` + store.KEKFileName + `. A KEK file readable or writable by group or
others is refused.

On SIGTERM or SIGINT: health turns NOT_SERVING, running calls get
--shutdown-timeout to finish, then the keystore is closed and kbs exits 0.

Logs are JSON lines on stderr; the first one is the configuration (never
the KEK). No key bytes or nonces are ever logged.

Examples:
  kbs serve --data-dir /var/lib/kbs \
      --spiffe-socket unix:///run/spire/agent-sockets/spire-agent.sock \
      --admin-ids spiffe://example.org/ns/cml-system/sa/kbs-admin
  kbs serve --data-dir ./data --svid-cert certs/kbs.pem --svid-key certs/kbs-key.pem \
      --bundle certs/ca.pem --admin-ids spiffe://example.org/admin \
      --dev-insecure-simulated-tdx ./tdxsim      # development only`,
		setup: func(fl *flags) action {
			fl.String(&f.dataDir, "data-dir", "DIR", "", "data directory created by 'kbs init' (required)")
			fl.String(&f.listen, "listen", "ADDR", defaultListen, "address (host:port) of the mTLS gRPC server")
			fl.String(&f.healthListen, "health-listen", "ADDR", defaultHealthListen, "address of the plaintext gRPC health service (grpc.health.v1 only)")
			fl.String(&f.metricsListen, "metrics-listen", "ADDR", defaultMetricsListen, "address of the HTTP /metrics endpoint; empty disables it")
			fl.String(&f.pprofListen, "pprof-listen", "ADDR", "", "DEBUGGING ONLY: serve Go's /debug/pprof/ profiles over\nplain HTTP, without authentication, on this loopback address\n(127.0.0.1:PORT or [::1]:PORT); empty (the default) disables it")
			fl.String(&f.spiffeSocket, "spiffe-socket", "ADDR", "", "SPIFFE Workload API address: unix:///path, a plain path, or tcp://IP:PORT")
			fl.String(&f.svidCert, "svid-cert", "FILE", "", "X.509-SVID PEM file (leaf first); with --svid-key and --bundle")
			fl.String(&f.svidKey, "svid-key", "FILE", "", "PKCS#8 PEM private key file of --svid-cert")
			fl.String(&f.bundle, "bundle", "FILE", "", "trust bundle PEM file of the trust domain")
			fl.String(&f.adminIDs, "admin-ids", "IDS", "", "comma-separated SPIFFE IDs (or spiffe://td/path/* prefixes)\nallowed every AdminService RPC; empty: nobody")
			fl.String(&f.auditorIDs, "auditor-ids", "IDS", "", "comma-separated SPIFFE IDs (or prefixes) allowed the\nread-only AdminService RPCs; empty: nobody")
			fl.String(&f.kekFile, "kek-file", "FILE", "", "KEK file (default DIR/"+store.KEKFileName+"); conflicts with "+kek.EnvVar)
			fl.String(&f.collateralDir, "collateral-dir", "DIR", "", "serve collateral only from this imported directory (offline)")
			fl.String(&f.pcsURL, "pcs-url", "URL", "", "Intel PCS v4 base URL (the default source: "+collateral.DefaultPCSURL+")")
			fl.String(&f.pccsURL, "pccs-url", "URL", "", "PCCS base URL, e.g. https://pccs.example:8081")
			fl.String(&f.pccsCA, "pccs-ca", "FILE", "", "PEM file of the CA that signed the PCCS's TLS certificate\n(only with --pccs-url; default: the system roots)")
			fl.String(&f.collateralCache, "collateral-cache", "DIR", "", "directory where fetched collateral is kept across restarts\n(default DIR/"+collateralCacheName+"; only with --pcs-url or --pccs-url)")
			fl.Duration(&f.challengeTTL, "challenge-ttl", "DURATION", defaultChallengeTTL, "how long a GetChallenge nonce stays valid")
			fl.Int64(&f.maxRequestBytes, "max-request-bytes", "BYTES", defaultMaxRequestBytes, "largest gRPC request accepted, in bytes")
			fl.Int64(&f.maxChallengesPerCaller, "max-challenges-per-caller", "N", defaultMaxChallengesPerCaller,
				"most outstanding (issued, unused, unexpired) challenges of one\nSPIFFE ID; beyond it GetChallenge fails with RESOURCE_EXHAUSTED\ntoo_many_challenges. Raise it when many loaders share one\nSPIFFE ID and start together")
			fl.Int64(&f.maxChallenges, "max-challenges", "N", defaultMaxChallenges,
				fmt.Sprintf("most outstanding challenges of all callers together\n(at least --max-challenges-per-caller, at most %d)", maxMaxChallenges))
			fl.String(&f.logLevel, "log-level", "LEVEL", "info", "debug, info, warn or error")
			fl.Duration(&f.shutdownTimeout, "shutdown-timeout", "DURATION", defaultShutdownTimeout, "how long running calls may take to finish at\nshutdown before they are cut off")
			fl.String(&f.devSimDir, "dev-insecure-simulated-tdx", "DIR", "", "DEVELOPMENT ONLY: also trust the TDX simulator root in this\n"+
				"directory (written by tdxsim init) and, unless --collateral-dir\nis given, serve its collateral. Every audit record is marked\nsimulated. Never use it in production.")
			fl.Env(kek.EnvVar, "the KEK as 64 hex digits, instead of a KEK file")
			return func(ctx context.Context, e *env) error {
				cfg, err := f.validate(fl)
				if err != nil {
					return err
				}
				return runner(ctx, e, cfg)
			}
		},
	}
}

// validate checks the flags and derives the configuration. Every problem
// is a usage error naming the flag.
func (f *serveFlags) validate(fl *flags) (*serveConfig, error) {
	c := f.serveConfig
	if c.dataDir == "" {
		return nil, usagef("--data-dir is required")
	}
	for name, v := range map[string]string{"listen": c.listen, "health-listen": c.healthListen} {
		if v == "" {
			return nil, usagef("--%s must not be empty", name)
		}
	}
	for name, v := range map[string]string{"listen": c.listen, "health-listen": c.healthListen, "metrics-listen": c.metricsListen, "pprof-listen": c.pprofListen} {
		if v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			return nil, usagef("--%s %q is not a host:port address: %v", name, v, err)
		}
	}
	if c.pprofListen != "" {
		host, _, _ := net.SplitHostPort(c.pprofListen)
		if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
			return nil, usagef("--pprof-listen %q must be a loopback IP address and port (profiles are served without authentication)", c.pprofListen)
		}
	}

	files := c.svidCert != "" || c.svidKey != "" || c.bundle != ""
	switch {
	case c.spiffeSocket != "" && files:
		return nil, usagef("--spiffe-socket and --svid-cert/--svid-key/--bundle are two identity modes; give exactly one")
	case c.spiffeSocket == "" && !files:
		return nil, usagef("no identity: give --spiffe-socket, or --svid-cert, --svid-key and --bundle")
	case files && (c.svidCert == "" || c.svidKey == "" || c.bundle == ""):
		return nil, usagef("the files identity mode needs all of --svid-cert, --svid-key and --bundle")
	}

	var err error
	if c.adminIDs, err = parseIDList("admin-ids", f.adminIDs); err != nil {
		return nil, err
	}
	if c.auditorIDs, err = parseIDList("auditor-ids", f.auditorIDs); err != nil {
		return nil, err
	}

	sources := 0
	for _, name := range []string{"collateral-dir", "pcs-url", "pccs-url"} {
		if fl.IsSet(name) {
			sources++
		}
	}
	if sources > 1 {
		return nil, usagef("--collateral-dir, --pcs-url and --pccs-url are exclusive; give at most one")
	}
	if fl.IsSet("collateral-dir") && c.collateralDir == "" {
		return nil, usagef("--collateral-dir must not be empty")
	}
	for _, name := range []string{"pcs-url", "pccs-url"} {
		if !fl.IsSet(name) {
			continue
		}
		v := c.pcsURL
		if name == "pccs-url" {
			v = c.pccsURL
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, usagef("--%s %q is not an http(s) URL", name, v)
		}
	}
	if c.pccsCA != "" && !fl.IsSet("pccs-url") {
		return nil, usagef("--pccs-ca is only used with --pccs-url")
	}
	offline := c.collateralDir != "" || (c.devSimDir != "" && sources == 0)
	if offline && c.collateralCache != "" {
		return nil, usagef("--collateral-cache is only used when collateral is fetched (--pcs-url or --pccs-url)")
	}
	if !offline && sources == 0 {
		c.pcsURL = collateral.DefaultPCSURL
	}
	if !offline && c.collateralCache == "" {
		c.collateralCache = filepath.Join(c.dataDir, collateralCacheName)
	}
	if fl.IsSet("dev-insecure-simulated-tdx") && c.devSimDir == "" {
		return nil, usagef("--dev-insecure-simulated-tdx needs the simulator directory")
	}

	if c.challengeTTL <= 0 || c.challengeTTL > maxChallengeTTL {
		return nil, usagef("--challenge-ttl %s is out of range (0, %s]", c.challengeTTL, maxChallengeTTL)
	}
	if c.maxRequestBytes < minRequestBytes || c.maxRequestBytes > maxRequestBytes {
		return nil, usagef("--max-request-bytes %d is out of range [%d, %d]", c.maxRequestBytes, minRequestBytes, maxRequestBytes)
	}
	if c.maxChallenges < 1 || c.maxChallenges > maxMaxChallenges {
		return nil, usagef("--max-challenges %d is out of range [1, %d]", c.maxChallenges, maxMaxChallenges)
	}
	if c.maxChallengesPerCaller < 1 || c.maxChallengesPerCaller > c.maxChallenges {
		return nil, usagef("--max-challenges-per-caller %d is out of range [1, %d] (at most --max-challenges)", c.maxChallengesPerCaller, c.maxChallenges)
	}
	if c.shutdownTimeout <= 0 {
		return nil, usagef("--shutdown-timeout must be positive, got %s", c.shutdownTimeout)
	}
	switch strings.ToLower(f.logLevel) {
	case "debug":
		c.logLevel = slog.LevelDebug
	case "info":
		c.logLevel = slog.LevelInfo
	case "warn":
		c.logLevel = slog.LevelWarn
	case "error":
		c.logLevel = slog.LevelError
	default:
		return nil, usagef("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	return &c, nil
}

// parseIDList splits a comma-separated list of SPIFFE IDs or prefixes.
// Entries are checked for their shape here; the server's authorization
// table validates them fully.
func parseIDList(flagName, v string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.HasPrefix(s, "spiffe://") {
			return nil, usagef("--%s: %q is not a SPIFFE ID (spiffe://trust-domain/path) or prefix (spiffe://trust-domain/path/*)", flagName, s)
		}
		out = append(out, s)
	}
	return out, nil
}

// modeName describes the identity source for the logs.
func (c *serveConfig) identitySummary() []any {
	if c.spiffeSocket != "" {
		return []any{"mode", "workload_api", "socket", c.spiffeSocket}
	}
	return []any{"mode", "files", "svid_cert", c.svidCert, "svid_key", c.svidKey, "bundle", c.bundle}
}

func (c *serveConfig) collateralSummary() []any {
	switch {
	case c.collateralDir != "":
		return []any{"mode", "dir", "dir", c.collateralDir}
	case c.pccsURL != "":
		return []any{"mode", "pccs", "url", c.pccsURL, "ca", c.pccsCA, "cache", c.collateralCache}
	case c.pcsURL != "":
		return []any{"mode", "pcs", "url", c.pcsURL, "cache", c.collateralCache}
	default:
		return []any{"mode", "simulator", "dir", filepath.Join(c.devSimDir, tdxsim.CollateralDir)}
	}
}

// newLogger returns the JSON logger on w.
func newLogger(w interface{ Write([]byte) (int, error) }, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// devWarning is printed, as plain text, when the simulator root is trusted.
const devWarning = `
################################################################################
#  WARNING: kbs is running with --dev-insecure-simulated-tdx.                  #
#                                                                              #
#  It trusts the root of a SIMULATED Intel TDX platform, whose private keys    #
#  are ordinary files. Anyone holding them can forge a "TDX quote" for any     #
#  measurements and obtain every key this broker releases. Every audit         #
#  record is marked simulated.                                                 #
#                                                                              #
#  FOR TESTS AND DEMOS ONLY. NEVER USE THIS FLAG WITH REAL MODEL KEYS.         #
################################################################################

`

// loadSimulatorRoot reads the simulator's root certificate from a
// directory written by tdxsim init.
func loadSimulatorRoot(dir string) (*x509.Certificate, error) {
	path := filepath.Join(dir, tdxsim.RootFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--dev-insecure-simulated-tdx: read the simulator root: %w", err)
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("--dev-insecure-simulated-tdx: %s must hold exactly one PEM CERTIFICATE", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("--dev-insecure-simulated-tdx: %s: %w", path, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("--dev-insecure-simulated-tdx: %s is not a CA certificate", path)
	}
	return cert, nil
}

// newCollateral returns the collateral getter the configuration selects.
func newCollateral(c *serveConfig, now func() time.Time) (*collateral.Getter, error) {
	switch {
	case c.collateralDir != "":
		if fi, err := os.Stat(c.collateralDir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("--collateral-dir %s is not a readable directory", c.collateralDir)
		}
		return collateral.New(collateral.Config{Dir: c.collateralDir, Offline: true, Now: now})
	case c.pcsURL == "" && c.pccsURL == "":
		dir := filepath.Join(c.devSimDir, tdxsim.CollateralDir)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("--dev-insecure-simulated-tdx: %s is not a readable directory (run tdxsim init first)", dir)
		}
		return collateral.New(collateral.Config{Dir: dir, Offline: true, Now: now})
	}
	base := c.pcsURL
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.pccsURL != "" {
		base = c.pccsURL
		if c.pccsCA != "" {
			pool := x509.NewCertPool()
			b, err := os.ReadFile(c.pccsCA)
			if err != nil {
				return nil, fmt.Errorf("--pccs-ca: %w", err)
			}
			if !pool.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("--pccs-ca: %s holds no PEM certificate", c.pccsCA)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
	}
	if err := os.MkdirAll(c.collateralCache, 0o700); err != nil {
		return nil, fmt.Errorf("--collateral-cache: %w", err)
	}
	return collateral.New(collateral.Config{
		Dir:        c.collateralCache,
		BaseURL:    base,
		HTTPClient: &http.Client{Transport: tr, Timeout: httpTimeout},
		Now:        now,
	})
}

// listeners are the broker's bound sockets.
type listeners struct {
	grpc, health, metrics, pprof net.Listener
}

func (l *listeners) close() {
	for _, x := range []net.Listener{l.grpc, l.health, l.metrics, l.pprof} {
		if x != nil {
			x.Close()
		}
	}
}

func listen(c *serveConfig) (*listeners, error) {
	l := &listeners{}
	var err error
	if l.grpc, err = net.Listen("tcp", c.listen); err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	if l.health, err = net.Listen("tcp", c.healthListen); err != nil {
		l.close()
		return nil, fmt.Errorf("--health-listen: %w", err)
	}
	if c.metricsListen != "" {
		if l.metrics, err = net.Listen("tcp", c.metricsListen); err != nil {
			l.close()
			return nil, fmt.Errorf("--metrics-listen: %w", err)
		}
	}
	if c.pprofListen != "" {
		if l.pprof, err = net.Listen("tcp", c.pprofListen); err != nil {
			l.close()
			return nil, fmt.Errorf("--pprof-listen: %w", err)
		}
	}
	return l, nil
}

// healthServer is the plaintext grpc.health.v1 server.
type healthServer struct {
	grpc   *grpc.Server
	health *health.Server
}

func newHealthServer(services ...string) *healthServer {
	h := &healthServer{grpc: grpc.NewServer(), health: health.NewServer()}
	healthpb.RegisterHealthServer(h.grpc, h.health)
	for _, s := range append([]string{""}, services...) {
		h.health.SetServingStatus(s, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return h
}

func (h *healthServer) set(status healthpb.HealthCheckResponse_ServingStatus, services ...string) {
	for _, s := range append([]string{""}, services...) {
		h.health.SetServingStatus(s, status)
	}
}

// runServe runs the broker until ctx ends (SIGTERM/SIGINT) or a listener
// fails. Start-up failures are logged and returned as loggedError.
func runServe(ctx context.Context, e *env, c *serveConfig) (err error) {
	log := newLogger(e.stderr, c.logLevel)
	defer func() {
		if err != nil {
			log.Error("kbs stopped", "error", err.Error())
			err = &loggedError{err}
		}
	}()
	kekSource := "file"
	if _, ok := e.lookupEnv(kek.EnvVar); ok {
		kekSource = "env " + kek.EnvVar
	}
	kekPath := c.kekFile
	if kekPath == "" && kekSource == "file" {
		kekPath = store.KEKPath(c.dataDir)
	}
	log.Info("kbs starting",
		slog.String("data_dir", c.dataDir),
		slog.String("listen", c.listen),
		slog.String("health_listen", c.healthListen),
		slog.String("metrics_listen", c.metricsListen),
		slog.String("pprof_listen", c.pprofListen),
		slog.Group("identity", c.identitySummary()...),
		slog.Any("admin_ids", nonNil(c.adminIDs)),
		slog.Any("auditor_ids", nonNil(c.auditorIDs)),
		slog.Group("kek", "source", kekSource, "file", kekPath),
		slog.Group("collateral", c.collateralSummary()...),
		slog.String("challenge_ttl", c.challengeTTL.String()),
		slog.Int64("max_request_bytes", c.maxRequestBytes),
		slog.Int64("max_challenges_per_caller", c.maxChallengesPerCaller),
		slog.Int64("max_challenges", c.maxChallenges),
		slog.String("shutdown_timeout", c.shutdownTimeout.String()),
		slog.String("log_level", c.logLevel.String()),
		slog.Bool("dev_insecure_simulated_tdx", c.devSimDir != ""),
	)

	var extraRoots []*x509.Certificate
	if c.devSimDir != "" {
		io.WriteString(e.stderr, devWarning)
		root, err := loadSimulatorRoot(c.devSimDir)
		if err != nil {
			return err
		}
		extraRoots = append(extraRoots, root)
		log.Warn("INSECURE: trusting the TDX simulator root; every audit record is marked simulated",
			"simulator_dir", c.devSimDir, "root_subject", root.Subject.String())
	}

	provider, _, err := loadKEK(c.dataDir, c.kekFile, e.lookupEnv, true)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, store.DBPath(c.dataDir), store.Options{KEK: provider, Now: e.now})
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w (run 'kbs init --data-dir %s' first)", err, c.dataDir)
		}
		return err
	}
	// The store is closed last, after every server has stopped.
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close keystore: %w", cerr)
		}
		log.Info("keystore closed")
	}()

	src, err := identity.Open(ctx, identity.Config{
		Socket: c.spiffeSocket, SVIDCert: c.svidCert, SVIDKey: c.svidKey, Bundle: c.bundle,
		Logger: log.With("component", "identity"),
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for the Workload API
		}
		return err
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}

	coll, err := newCollateral(c, e.now)
	if err != nil {
		return err
	}
	v, err := verifier.New(verifier.Config{Collateral: coll, ExtraRoots: extraRoots, Now: e.now})
	if err != nil {
		return err
	}
	m, err := metrics.New(metrics.Options{Keys: st, Logger: log.With("component", "metrics")})
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{
		Store:           st,
		Verifier:        v,
		AdminIDs:        c.adminIDs,
		AuditorIDs:      c.auditorIDs,
		ChallengeTTL:    c.challengeTTL,
		MaxRequestBytes: int(c.maxRequestBytes),
		// Both are validated to [1, maxMaxChallenges]: never 0 (the
		// server's "default") and never truncated by the conversion.
		MaxChallengesPerCaller: int(c.maxChallengesPerCaller),
		MaxChallenges:          int(c.maxChallenges),
		Simulated:              c.devSimDir != "",
		Now:                    e.now,
		Logger:                 log,
		Metrics:                m,
	})
	if err != nil {
		return err
	}
	creds, err := identity.ServerCredentials(src, nil)
	if err != nil {
		return err
	}
	// The metrics interceptor goes first, so it sees the final status codes.
	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()), grpc.Creds(creds),
		// Long-lived workers run the RPCs, so a release's deep call stack
		// (quote verification, HPKE) does not grow a fresh goroutine's stack
		// on every call (runtime.morestack was ~4% of the broker's CPU under
		// load). Streams beyond the workers still get their own goroutine.
		grpc.NumStreamWorkers(streamWorkers),
	}, srv.ServerOptions()...)
	g := grpc.NewServer(opts...)
	srv.Register(g)

	lis, err := listen(c)
	if err != nil {
		return err
	}
	defer lis.close()
	services := []string{kbsv1.KeyBrokerService_ServiceDesc.ServiceName, kbsv1.AdminService_ServiceDesc.ServiceName}
	hs := newHealthServer(services...)

	errc := make(chan error, 4)
	go func() { errc <- serveErr("grpc", g.Serve(lis.grpc)) }()
	go func() { errc <- serveErr("health", hs.grpc.Serve(lis.health)) }()
	var hsrv *http.Server
	if lis.metrics != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", m)
		hsrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		go func() { errc <- serveErr("metrics", hsrv.Serve(lis.metrics)) }()
	}

	var psrv *http.Server
	pprofAddr := ""
	if lis.pprof != nil {
		psrv = newPprofServer(log)
		pprofAddr = lis.pprof.Addr().String()
		log.Warn("serving Go profiles without authentication (--pprof-listen); for debugging only", "pprof", pprofAddr)
		go func() { errc <- serveErr("pprof", psrv.Serve(lis.pprof)) }()
	}

	hs.set(healthpb.HealthCheckResponse_SERVING, services...)
	metricsAddr := ""
	if lis.metrics != nil {
		metricsAddr = lis.metrics.Addr().String()
	}
	log.Info("kbs serving",
		"grpc", lis.grpc.Addr().String(), "health", lis.health.Addr().String(), "metrics", metricsAddr,
		"pprof", pprofAddr, "spiffe_id", svid.ID.String())

	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx).Error())
	case err = <-errc:
		log.Error("a listener failed; shutting down", "error", err.Error())
	}

	// Probes see NOT_SERVING while running calls finish.
	hs.set(healthpb.HealthCheckResponse_NOT_SERVING, services...)
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	timer := time.NewTimer(c.shutdownTimeout)
	select {
	case <-stopped:
		timer.Stop()
	case <-timer.C:
		log.Warn("graceful stop timed out; closing the remaining connections", "timeout", c.shutdownTimeout.String())
		g.Stop()
		<-stopped
	}
	for _, h := range []*http.Server{hsrv, psrv} {
		if h != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			h.Shutdown(sctx)
			cancel()
		}
	}
	hs.grpc.Stop()
	log.Info("servers stopped")
	return err
}

// newPprofServer serves net/http/pprof's handlers on their own mux (never
// http.DefaultServeMux): /debug/pprof/ (index and named profiles),
// /debug/pprof/profile (CPU, ?seconds=N) and /debug/pprof/trace.
func newPprofServer(log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

// nonNil logs an empty list as [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// serveErr turns a Serve result into a named error; a normal stop is nil.
func serveErr(name string, err error) error {
	if err == nil || errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s server: %w", name, err)
}
