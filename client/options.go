package client

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/cml-project/cml/identity"
)

// Option configures a Client (see New).
type Option func(*options)

type options struct {
	idCfg       identity.Config // Workload API socket or SVID files
	src         identity.Source // caller-managed source; not closed by Close
	serverID    spiffeid.ID
	timeout     time.Duration
	retryWait   time.Duration
	postQuantum bool
	dialOpts    []grpc.DialOption
}

// WithWorkloadAPI takes the client's X.509-SVID and trust bundle from the
// SPIFFE Workload API at socket ("unix:///run/spire/agent.sock", a plain
// path, or "tcp://IP:PORT").
func WithWorkloadAPI(socket string) Option {
	return func(o *options) {
		o.idCfg = identity.Config{Socket: socket}
	}
}

// WithSVIDFiles reads the client's X.509-SVID (certFile, leaf first), its
// PKCS#8 key (keyFile) and the trust bundle (bundleFile) from PEM files,
// reloading them when they change.
func WithSVIDFiles(certFile, keyFile, bundleFile string) Option {
	return func(o *options) {
		o.idCfg = identity.Config{SVIDCert: certFile, SVIDKey: keyFile, Bundle: bundleFile}
	}
}

// WithSource uses a Source the caller manages (tests, or a program sharing
// one source between clients). Close does not close it.
func WithSource(src identity.Source) Option {
	return func(o *options) { o.src = src }
}

// WithServerID is the SPIFFE ID the broker must present. Required: New
// fails without it, so a client never talks to an impostor broker.
func WithServerID(id spiffeid.ID) Option {
	return func(o *options) { o.serverID = id }
}

// WithTimeout bounds each RPC (and, with WithRetry, each attempt) to d.
// 0 (the default) leaves only the caller's context.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// WithRetry retries calls that fail with Unavailable (broker not reachable,
// connection refused or reset, handshake failure), and releases whose
// GetChallenge is refused with ResourceExhausted "too_many_challenges" (the
// broker's bound on outstanding challenges, reached while other loaders are
// mid-release), with exponential backoff, for at most maxWait in total per
// operation. PermissionDenied and every other code or reason are never
// retried.
func WithRetry(maxWait time.Duration) Option {
	return func(o *options) { o.retryWait = maxWait }
}

// WithPostQuantum makes ReleaseKey and ExportKey use the post-quantum hybrid
// KEM MLKEM768X25519 instead of X25519.
func WithPostQuantum() Option {
	return func(o *options) { o.postQuantum = true }
}

// WithDialOptions adds gRPC dial options (for example a bufconn dialer in
// tests). Transport credentials are always the client's SPIFFE mTLS
// credentials; do not pass others.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}
