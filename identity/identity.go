package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const (
	// DefaultStartupTimeout bounds how long Open waits for the first SVID
	// from the Workload API. The SPIRE agent may need a few seconds after a
	// pod starts before its registration entry is synced.
	DefaultStartupTimeout = 30 * time.Second

	// DefaultReloadInterval is how often, at most, the files mode checks its
	// files for changes.
	DefaultReloadInterval = 2 * time.Second
)

// Source provides the current X.509-SVID and the trust bundles. Both
// methods are called on every TLS handshake, so an implementation that
// updates itself (the Workload API, rotated files) is picked up at once.
type Source interface {
	x509svid.Source
	x509bundle.Source
	// Close releases the source; later calls to the getters fail.
	Close() error
}

var (
	_ Source = (*workloadapi.X509Source)(nil)
	_ Source = (*workloadSource)(nil)
	_ Source = (*fileSource)(nil)
	_ Source = (*staticSource)(nil)
)

// Config selects where the identity comes from: set either Socket, or all
// three of SVIDCert, SVIDKey and Bundle.
type Config struct {
	// Socket is the SPIFFE Workload API address: "unix:///path/to/agent.sock",
	// a plain path (taken as a unix socket), or "tcp://IP:PORT".
	Socket string
	// StartupTimeout bounds the wait for the first SVID from the Workload
	// API; 0 means DefaultStartupTimeout.
	StartupTimeout time.Duration

	// SVIDCert is a PEM file with the X.509-SVID, leaf first, then any
	// intermediates.
	SVIDCert string
	// SVIDKey is a PEM file with the SVID's PKCS#8 private key ("PRIVATE KEY").
	SVIDKey string
	// Bundle is a PEM file with the trust domain's CA certificates. Its trust
	// domain is the SVID's.
	Bundle string
	// ReloadInterval is how often, at most, the files are checked for
	// changes; 0 means DefaultReloadInterval.
	ReloadInterval time.Duration

	// Now returns the current time; nil means time.Now. The files mode uses it
	// for validity checks and the reload interval.
	Now func() time.Time
	// Logger receives reloads and Workload API errors; nil discards them.
	Logger *slog.Logger
}

// Open returns the Source cfg selects. In Workload API mode it blocks until
// the agent delivered a first SVID and bundle, ctx is done, or the startup
// timeout passed. In files mode it loads and checks the three files.
func Open(ctx context.Context, cfg Config) (Source, error) {
	files := cfg.SVIDCert != "" || cfg.SVIDKey != "" || cfg.Bundle != ""
	switch {
	case cfg.Socket != "" && files:
		return nil, errors.New("identity: configure either the SPIFFE Workload API socket or the SVID/bundle files, not both")
	case cfg.Socket != "":
		return openWorkloadAPI(ctx, cfg)
	case files:
		var missing []string
		for _, f := range []struct{ name, value string }{{"SVID certificate", cfg.SVIDCert}, {"SVID key", cfg.SVIDKey}, {"bundle", cfg.Bundle}} {
			if f.value == "" {
				missing = append(missing, f.name)
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("identity: files mode needs the SVID certificate, SVID key and bundle files; missing: %v", missing)
		}
		return openFiles(cfg)
	default:
		return nil, errors.New("identity: no identity configured: set the SPIFFE Workload API socket, or the SVID certificate, SVID key and bundle files")
	}
}

// NewStaticSource returns a Source that always provides svid and the given
// bundles (an *x509bundle.Bundle or an *x509bundle.Set). It does not reload
// anything; tests use it with package devca.
func NewStaticSource(svid *x509svid.SVID, bundles x509bundle.Source) Source {
	return &staticSource{svid: svid, bundles: bundles}
}

type staticSource struct {
	svid    *x509svid.SVID
	bundles x509bundle.Source
}

func (s *staticSource) GetX509SVID() (*x509svid.SVID, error) {
	if s.svid == nil {
		return nil, errors.New("identity: static source has no SVID")
	}
	return s.svid, nil
}

func (s *staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if s.bundles == nil {
		return nil, errors.New("identity: static source has no bundle")
	}
	return s.bundles.GetX509BundleForTrustDomain(td)
}

func (s *staticSource) Close() error { return nil }

func logger(cfg Config) *slog.Logger {
	if cfg.Logger != nil {
		return cfg.Logger
	}
	return slog.New(slog.DiscardHandler)
}
