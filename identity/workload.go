package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// workloadSource is go-spiffe's X509Source plus a goroutine that logs each
// rotation, which operators want to see.
type workloadSource struct {
	*workloadapi.X509Source
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func (s *workloadSource) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		err = s.X509Source.Close()
	})
	return err
}

func openWorkloadAPI(ctx context.Context, cfg Config) (Source, error) {
	addr, err := workloadAddress(cfg.Socket)
	if err != nil {
		return nil, err
	}
	timeout := cfg.StartupTimeout
	if timeout == 0 {
		timeout = DefaultStartupTimeout
	}
	if timeout < 0 {
		return nil, fmt.Errorf("identity: startup timeout %s is negative", timeout)
	}
	log := logger(cfg)
	rec := &watchLogger{log: log}

	startCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	x509src, err := workloadapi.NewX509Source(startCtx,
		workloadapi.WithClientOptions(workloadapi.WithAddr(addr), workloadapi.WithLogger(rec)))
	if err != nil {
		msg := "identity: no X.509-SVID from the SPIFFE Workload API at " + addr
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			msg += " within " + timeout.String()
		}
		if last := rec.lastError(); last != "" {
			msg += " (last error: " + last + ")"
		}
		return nil, fmt.Errorf("%s: %w", msg, err)
	}
	svid, err := x509src.GetX509SVID()
	if err != nil {
		x509src.Close()
		return nil, fmt.Errorf("identity: Workload API at %s: %w", addr, err)
	}
	log.Info("identity: got X.509-SVID from the Workload API", "socket", addr, "spiffe_id", svid.ID.String(),
		"serial", svid.Certificates[0].SerialNumber.Text(16), "not_after", svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339))

	s := &workloadSource{X509Source: x509src, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			case <-x509src.Updated():
				if svid, err := x509src.GetX509SVID(); err == nil {
					log.Info("identity: X.509-SVID updated by the Workload API", "spiffe_id", svid.ID.String(),
						"serial", svid.Certificates[0].SerialNumber.Text(16), "not_after", svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
				}
			}
		}
	}()
	return s, nil
}

// workloadAddress turns the --spiffe-socket value into a Workload API
// address: a URI (unix:///path, tcp://IP:PORT) is checked as is, anything
// else is a filesystem path to a unix socket.
func workloadAddress(s string) (string, error) {
	addr := s
	if !strings.HasPrefix(s, "unix:") && !strings.HasPrefix(s, "tcp:") && !strings.Contains(s, "://") {
		abs, err := filepath.Abs(s)
		if err != nil {
			return "", fmt.Errorf("identity: spiffe socket %q: %w", s, err)
		}
		addr = (&url.URL{Scheme: "unix", Path: abs}).String()
	}
	if err := workloadapi.ValidateAddress(addr); err != nil {
		return "", fmt.Errorf("identity: spiffe socket %q: %w", s, err)
	}
	// URL schemes are case-insensitive and go-spiffe accepts "TCP://…";
	// url.Parse lowercases the scheme, so return the canonical spelling.
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "unix" && u.Scheme != "tcp") {
		return "", fmt.Errorf("identity: spiffe socket %q: want unix:///path, a path, or tcp://IP:PORT", s)
	}
	return u.Scheme + addr[len(u.Scheme):], nil
}

// watchLogger forwards go-spiffe's log lines to slog and remembers the last
// error, which explains a startup timeout (typically "PermissionDenied: no
// identity issued": the workload has no registration entry).
type watchLogger struct {
	log  *slog.Logger
	mu   sync.Mutex
	last string
}

func (l *watchLogger) Debugf(format string, args ...any) {
	l.log.Debug("identity: workloadapi: " + fmt.Sprintf(format, args...))
}

func (l *watchLogger) Infof(format string, args ...any) {
	l.log.Info("identity: workloadapi: " + fmt.Sprintf(format, args...))
}

func (l *watchLogger) Warnf(format string, args ...any) {
	l.log.Warn("identity: workloadapi: " + fmt.Sprintf(format, args...))
}

// Errorf logs at warning level: go-spiffe retries after each error.
func (l *watchLogger) Errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	l.last = msg
	l.mu.Unlock()
	l.log.Warn("identity: workloadapi: " + msg)
}

func (l *watchLogger) lastError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}
