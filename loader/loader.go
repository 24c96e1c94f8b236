package loader

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/cml-project/cml/client"
	"github.com/cml-project/cml/emdl"
	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/tdx/quote"
)

// DefaultTimeout is how long Run waits, by default, for the SPIRE agent and
// the key broker.
const DefaultTimeout = 5 * time.Minute

// Config is what Run needs. cmd/cml-loader fills it from flags and the
// environment.
type Config struct {
	// KBS is the key broker's address (host:port).
	KBS string
	// KBSID is the SPIFFE ID the broker must present. Required.
	KBSID spiffeid.ID
	// KeyID is the model key's id; the model's header must name it.
	KeyID string
	// KeyVersion is the key version to ask for; 0 means the version in the
	// model's header (the usual case). Non-zero, it must equal the header's.
	KeyVersion uint32
	// Src is the encrypted model directory; Dst where the plaintext goes
	// (see the package documentation for the rules).
	Src, Dst string

	// Identity selects the SVID source: the Workload API socket, or the
	// three files. Source, if set, is used instead (tests) and not closed.
	Identity identity.Config
	Source   identity.Source

	// Quote obtains the TDX quote. Required.
	Quote quote.Provider
	// Timeout bounds the wait for the SPIRE agent and the broker, retries
	// included (DefaultTimeout if 0). It does not bound the decryption.
	Timeout time.Duration
	// PostQuantum uses the MLKEM768-X25519 hybrid KEM for the release.
	PostQuantum bool
	// VerifyPlaintextHash also re-checks each file's plaintext SHA-256
	// against the manifest. Off by default: every chunk is authenticated
	// anyway (AES-256-GCM, in order and complete, under a key-committed
	// header the authenticated manifest lists), so the hash guards only
	// against an inconsistent encryptor holding the key, not against
	// anyone without it — and it is the largest CPU cost of decryption
	// (emdl.DecryptOptions.SkipPlaintextHash).
	VerifyPlaintextHash bool

	// DialOptions are extra gRPC dial options (tests).
	DialOptions []grpc.DialOption
	// Logger receives the summary line and warnings; nil discards them.
	Logger *slog.Logger
	// Now is the clock of the summary's timings; nil means time.Now.
	Now func() time.Time
}

// Summary is what Run did.
type Summary struct {
	ModelID       string
	KeyID         string
	KeyVersion    uint32
	Files         int
	Bytes         int64
	Attestation   time.Duration // GetChallenge + quote + ReleaseKey, including retries
	Decryption    time.Duration
	Total         time.Duration
	PolicyVersion uint32
	RequestID     string
}

// Run attests to the broker, obtains the model key and decrypts the model
// from cfg.Src to cfg.Dst. The returned error maps to an exit code with
// ExitCode. On success it logs exactly one line, the summary.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := now()
	if err := checkConfig(&cfg); err != nil {
		return Summary{}, err
	}

	// What the model says, before anything is asked of the broker.
	info, err := emdl.Inspect(cfg.Src)
	if err != nil {
		return Summary{}, fmt.Errorf("loader: reading the model header in %s: %w", cfg.Src, err)
	}
	if info.KeyID != cfg.KeyID {
		return Summary{}, fmt.Errorf("%w: %s is encrypted with key %q, not %q", ErrKeyMismatch, cfg.Src, info.KeyID, cfg.KeyID)
	}
	if cfg.KeyVersion != 0 && info.KeyVersion != cfg.KeyVersion {
		return Summary{}, fmt.Errorf("%w: %s is encrypted with version %d of key %q, not version %d", ErrKeyMismatch, cfg.Src, info.KeyVersion, cfg.KeyID, cfg.KeyVersion)
	}
	out, err := prepareDst(cfg.Dst, log)
	if err != nil {
		return Summary{}, err
	}
	done := false
	defer func() {
		if !done {
			out.abort() // a failed run leaves --dst as it found it
		}
	}()

	attStart := now()
	rk, err := release(ctx, &cfg, info.KeyVersion)
	if err != nil {
		return Summary{}, err
	}
	defer rk.Zero()
	attestation := now().Sub(attStart)
	if rk.KeyID != cfg.KeyID || rk.Version != info.KeyVersion {
		return Summary{}, fmt.Errorf("%w: the broker released version %d of key %q, the model needs version %d of %q", ErrKeyMismatch, rk.Version, rk.KeyID, info.KeyVersion, cfg.KeyID)
	}
	if rk.Algorithm != client.AlgorithmAES256GCM {
		return Summary{}, fmt.Errorf("loader: the broker released a %s key, a model needs %s", rk.Algorithm, client.AlgorithmAES256GCM)
	}

	decStart := now()
	sum, err := emdl.Decrypt(ctx, rk.Key, cfg.Src, out.target, emdl.DecryptOptions{
		KeyID:             cfg.KeyID,
		KeyVersion:        info.KeyVersion,
		SkipPlaintextHash: !cfg.VerifyPlaintextHash,
	})
	rk.Zero()
	if err != nil {
		return Summary{}, fmt.Errorf("loader: decrypting %s: %w", cfg.Src, err)
	}
	if err := out.commit(cfg.Src, info.SingleFile); err != nil {
		return Summary{}, err
	}
	done = true
	end := now()

	s := Summary{
		ModelID:       info.ModelID,
		KeyID:         rk.KeyID,
		KeyVersion:    rk.Version,
		Files:         sum.Files,
		Bytes:         sum.Bytes,
		Attestation:   attestation,
		Decryption:    end.Sub(decStart),
		Total:         end.Sub(start),
		PolicyVersion: rk.PolicyVersion,
		RequestID:     rk.RequestID,
	}
	mbps := 0.0
	if secs := s.Decryption.Seconds(); secs > 0 {
		mbps = float64(s.Bytes) / 1e6 / secs
	}
	log.LogAttrs(ctx, slog.LevelInfo, "model decrypted",
		slog.String("model", s.ModelID),
		slog.String("src", cfg.Src),
		slog.String("dst", cfg.Dst),
		slog.String("key", s.KeyID),
		slog.Uint64("key_version", uint64(s.KeyVersion)),
		slog.Uint64("policy_version", uint64(s.PolicyVersion)),
		slog.String("request_id", s.RequestID),
		slog.Int("files", s.Files),
		slog.Int64("bytes", s.Bytes),
		slog.Bool("plaintext_hash_verified", cfg.VerifyPlaintextHash),
		slog.Float64("seconds", round3(s.Total.Seconds())),
		slog.Float64("throughput_mb_s", round3(mbps)),
		slog.Int64("attestation_ms", s.Attestation.Milliseconds()),
	)
	return s, nil
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// release connects to the broker and runs the key release protocol, within
// the Timeout budget.
func release(ctx context.Context, cfg *Config, version uint32) (*client.ReleasedKey, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	opts := []client.Option{
		client.WithServerID(cfg.KBSID),
		client.WithRetry(cfg.Timeout),
		client.WithDialOptions(cfg.DialOptions...),
	}
	switch {
	case cfg.Source != nil:
		opts = append(opts, client.WithSource(cfg.Source))
	case cfg.Identity.Socket != "":
		opts = append(opts, client.WithWorkloadAPI(cfg.Identity.Socket))
	default:
		opts = append(opts, client.WithSVIDFiles(cfg.Identity.SVIDCert, cfg.Identity.SVIDKey, cfg.Identity.Bundle))
	}
	if cfg.PostQuantum {
		opts = append(opts, client.WithPostQuantum())
	}
	c, err := client.New(ctx, cfg.KBS, opts...)
	if err != nil {
		return nil, timedOut(ctx, err)
	}
	defer c.Close()
	rk, err := c.ReleaseKey(ctx, cfg.KeyID, version, cfg.Quote)
	if err != nil {
		return nil, timedOut(ctx, err)
	}
	return rk, nil
}

// checkConfig refuses a configuration that cannot work and fills defaults.
func checkConfig(cfg *Config) error {
	var missing []string
	if cfg.KBS == "" {
		missing = append(missing, "the broker address (--kbs)")
	}
	if cfg.KBSID.IsZero() {
		missing = append(missing, "the broker's SPIFFE ID (--kbs-spiffe-id)")
	}
	if cfg.KeyID == "" {
		missing = append(missing, "the key id (--key)")
	}
	if cfg.Src == "" {
		missing = append(missing, "the encrypted model directory (--src)")
	}
	if cfg.Dst == "" {
		missing = append(missing, "the output path (--dst)")
	}
	if cfg.Quote == nil {
		missing = append(missing, "a quote provider")
	}
	if len(missing) > 0 {
		return &UsageError{Msg: "missing " + joinList(missing)}
	}
	if cfg.KBSID.Path() == "" {
		return &UsageError{Msg: fmt.Sprintf("broker SPIFFE ID %s names a trust domain, not a workload", cfg.KBSID)}
	}
	id := cfg.Identity
	files := id.SVIDCert != "" || id.SVIDKey != "" || id.Bundle != ""
	switch {
	case cfg.Source != nil:
	case id.Socket != "" && files:
		return &UsageError{Msg: "give either the Workload API socket or the SVID files, not both"}
	case id.Socket == "" && !files:
		return &UsageError{Msg: "missing the identity: the Workload API socket (--spiffe-socket or SPIFFE_ENDPOINT_SOCKET) or --svid-cert, --svid-key and --bundle"}
	case files && (id.SVIDCert == "" || id.SVIDKey == "" || id.Bundle == ""):
		return &UsageError{Msg: "the SVID files need all three of --svid-cert, --svid-key and --bundle"}
	}
	if cfg.Timeout < 0 {
		return &UsageError{Msg: fmt.Sprintf("timeout %s is negative", cfg.Timeout)}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	return nil
}

func joinList(s []string) string {
	switch len(s) {
	case 1:
		return s[0]
	case 2:
		return s[0] + " and " + s[1]
	}
	out := ""
	for i, x := range s {
		switch {
		case i == len(s)-1:
			out += ", and " + x
		case i > 0:
			out += ", " + x
		default:
			out = x
		}
	}
	return out
}
