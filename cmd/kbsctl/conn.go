package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/cml-project/cml/client"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// Environment variables that supply defaults for the connection flags.
const (
	envKBS          = "CML_KBS"
	envKBSSPIFFEID  = "CML_KBS_SPIFFE_ID"
	envSPIFFESocket = "SPIFFE_ENDPOINT_SOCKET" // the Workload API's standard variable
	envSVIDCert     = "CML_SVID_CERT"
	envSVIDKey      = "CML_SVID_KEY"
	envBundle       = "CML_BUNDLE"
)

// defaultTimeout bounds each call to the key broker.
const defaultTimeout = 30 * time.Second

// connHelp is appended to the help of every command that talks to the key
// broker.
const connHelp = `
Connection: --kbs names the key broker and --kbs-spiffe-id the SPIFFE ID
its certificate must carry (both required; or CML_KBS, CML_KBS_SPIFFE_ID).
kbsctl authenticates with an X.509-SVID, either from the SPIFFE Workload
API (--spiffe-socket, or SPIFFE_ENDPOINT_SOCKET) or from files
(--svid-cert, --svid-key and --bundle, or CML_SVID_CERT, CML_SVID_KEY and
CML_BUNDLE). A flag wins over its environment variable.`

// connFlags are the flags every command that talks to the key broker
// shares.
type connFlags struct {
	addr     string
	serverID string
	socket   string
	svidCert string
	svidKey  string
	bundle   string
	timeout  time.Duration
}

// register binds the connection flags on fs.
func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "kbs", "", "key broker `ADDR` (host:port), e.g. kbs.cml-system:8443; env "+envKBS)
	fs.StringVar(&c.serverID, "kbs-spiffe-id", "", "SPIFFE `ID` the key broker must present, e.g. spiffe://example.org/kbs (required); env "+envKBSSPIFFEID)
	fs.StringVar(&c.socket, "spiffe-socket", "", "SPIFFE Workload API `ADDR` (unix:///path or a path) for kbsctl's own SVID; env "+envSPIFFESocket)
	fs.StringVar(&c.svidCert, "svid-cert", "", "X.509-SVID PEM `FILE` (instead of --spiffe-socket); env "+envSVIDCert)
	fs.StringVar(&c.svidKey, "svid-key", "", "PKCS#8 private key PEM `FILE` of --svid-cert; env "+envSVIDKey)
	fs.StringVar(&c.bundle, "bundle", "", "trust bundle PEM `FILE` (with --svid-cert); env "+envBundle)
	fs.DurationVar(&c.timeout, "timeout", defaultTimeout, "bound on connecting and on each call to the key broker, `DURATION`")
}

// pick returns flag if set, else the environment variable.
func pick(e *env, flagValue, envName string) string {
	if flagValue != "" {
		return flagValue
	}
	return e.lookupEnv(envName)
}

// options resolves the flags and environment into the broker address and
// the client options. Every problem is a usage error naming the flag.
func (c *connFlags) options(e *env) (string, []client.Option, error) {
	addr := pick(e, c.addr, envKBS)
	if addr == "" {
		return "", nil, usagef("--kbs is required: the key broker's host:port, e.g. --kbs kbs.cml-system:8443 (or set %s)", envKBS)
	}
	rawID := pick(e, c.serverID, envKBSSPIFFEID)
	if rawID == "" {
		return "", nil, usagef("--kbs-spiffe-id is required: the SPIFFE ID in the key broker's certificate, e.g. spiffe://example.org/kbs (or set %s)", envKBSSPIFFEID)
	}
	serverID, err := spiffeid.FromString(rawID)
	if err != nil {
		return "", nil, usagef("--kbs-spiffe-id %q: %v; want spiffe://TRUST-DOMAIN/PATH", rawID, err)
	}
	if c.timeout <= 0 {
		return "", nil, usagef("--timeout %s: want a positive duration, e.g. 30s", c.timeout)
	}

	// The identity mode: flags decide when any is given (a files-mode flag
	// still takes the other files from the environment); otherwise the
	// environment, where both modes at once is ambiguous.
	fileFlags := c.svidCert != "" || c.svidKey != "" || c.bundle != ""
	var socket, cert, key, bundle string
	switch {
	case c.socket != "" && fileFlags:
		return "", nil, usagef("--spiffe-socket and --svid-cert/--svid-key/--bundle are two identity modes; give one")
	case c.socket != "":
		socket = c.socket
	case fileFlags:
		// Files mode: each file from its flag, else its variable.
		cert, key, bundle = pick(e, c.svidCert, envSVIDCert), pick(e, c.svidKey, envSVIDKey), pick(e, c.bundle, envBundle)
	default:
		socket = e.lookupEnv(envSPIFFESocket)
		cert, key, bundle = e.lookupEnv(envSVIDCert), e.lookupEnv(envSVIDKey), e.lookupEnv(envBundle)
		if socket != "" && (cert != "" || key != "" || bundle != "") {
			return "", nil, usagef("both %s and %s/%s/%s are set; choose one identity mode with --spiffe-socket or --svid-cert/--svid-key/--bundle", envSPIFFESocket, envSVIDCert, envSVIDKey, envBundle)
		}
	}
	opts := []client.Option{client.WithServerID(serverID), client.WithTimeout(c.timeout)}
	switch {
	case socket != "":
		opts = append(opts, client.WithWorkloadAPI(socket))
	case cert == "" && key == "" && bundle == "":
		return "", nil, usagef("no identity for kbsctl: give --spiffe-socket (or set %s), or --svid-cert, --svid-key and --bundle", envSPIFFESocket)
	case cert == "" || key == "" || bundle == "":
		return "", nil, usagef("the SVID files mode needs all of --svid-cert, --svid-key and --bundle (or %s, %s, %s)", envSVIDCert, envSVIDKey, envBundle)
	default:
		opts = append(opts, client.WithSVIDFiles(cert, key, bundle))
	}
	return addr, opts, nil
}

// conn is an open connection to the key broker.
type conn struct {
	addr    string
	timeout time.Duration
	*client.Client
}

// dial connects to the key broker. The caller closes the connection.
func (c *connFlags) dial(ctx context.Context, e *env) (*conn, error) {
	addr, opts, err := c.options(e)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cl, err := client.New(dctx, addr, opts...)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to the key broker at %s: %w", addr, ctx.Err())
		}
		return nil, fmt.Errorf("connect to the key broker at %s: %w; check --kbs, --kbs-spiffe-id and kbsctl's identity (--spiffe-socket or --svid-cert/--svid-key/--bundle)", addr, err)
	}
	return &conn{addr: addr, timeout: c.timeout, Client: cl}, nil
}

// reasonText says in words what a reason code of a failed admin call means.
var reasonText = map[string]string{
	"key_not_found":         "no such key",
	"key_version_not_found": "no such key version",
	"key_exists":            "a key with this id exists already",
	"key_disabled":          "the key or version is disabled",
	"key_destroyed":         "the key or version is destroyed",
	"no_policy":             "the key has no release policy",
	"too_many_versions":     "the key has the maximum number of versions",
	"not_authorized":        "not authorized",
	"unauthenticated":       "no verified client identity",
	"request_too_large":     "the request is too large",
}

// rpcDetail returns the reason code and request id the broker attached to
// a failed call.
func rpcDetail(err error) (reason, requestID string) {
	if r, id, ok := client.ReasonOf(err); ok {
		return r, id
	}
	st, ok := status.FromError(err)
	if !ok {
		return "", ""
	}
	for _, d := range st.Details() {
		if ed, ok := d.(*kbsv1.ErrorDetail); ok {
			return ed.GetReasonCode(), ed.GetRequestId()
		}
	}
	return "", ""
}

// explain turns the error of a call to the broker into a message naming
// what failed (op, e.g. `key get "llama"`) and how to fix it; hint, if not
// nil, adds a command-specific fix for a reason code. A PermissionDenied
// exits with exitRefused.
func (c *conn) explain(ctx context.Context, op string, err error, hint func(reason string) string) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled) {
		return fmt.Errorf("%s: interrupted: %w", op, context.Canceled)
	}
	if errors.Is(err, client.ErrServerIdentity) {
		return withFix(fmt.Sprintf("%s: the server at %s is not the key broker kbsctl expects: %s", op, c.addr, strings.TrimPrefix(err.Error(), "client: ")),
			"--kbs-spiffe-id must be the SPIFFE ID in the key broker's certificate; check it and --kbs")
	}
	reason, reqID := rpcDetail(err)
	st, isStatus := innerStatus(err)
	code := st.Code()
	msg := st.Message()
	var d *client.DeniedError
	switch {
	case errors.As(err, &d):
		code, msg = codes.PermissionDenied, d.Reason
	case !isStatus:
		return fmt.Errorf("%s: %w", op, err)
	}
	what := msg
	if t, ok := reasonText[reason]; ok && (msg == reason || msg == "") {
		what = t
	}
	tag := reason
	if reqID != "" {
		if tag != "" {
			tag += ", "
		}
		tag += "request id " + reqID
	}
	if tag != "" {
		what += " (" + tag + ")"
	}
	fix := ""
	if hint != nil {
		fix = hint(reason)
	}
	switch code {
	case codes.PermissionDenied:
		if fix == "" && reason == "not_authorized" {
			fix = "kbsctl's SPIFFE ID must be in the broker's admin list (kbs serve --admin-ids), or for read-only commands its auditor list (--auditor-ids); the audit log records the attempt"
		}
		return &codedError{code: exitRefused, err: withFix(fmt.Sprintf("%s: denied by the key broker: %s", op, what), fix)}
	case codes.Unauthenticated:
		return withFix(fmt.Sprintf("%s: the key broker did not accept kbsctl's identity: %s", op, what),
			"check --svid-cert/--svid-key/--bundle or the SPIRE registration of kbsctl")
	case codes.Unavailable:
		return withFix(fmt.Sprintf("%s: the key broker at %s is unreachable: %s", op, c.addr, msg),
			"check --kbs, that kbs is running, and that --kbs-spiffe-id is the SPIFFE ID in its certificate")
	case codes.DeadlineExceeded:
		return withFix(fmt.Sprintf("%s: no answer from the key broker at %s within %s", op, c.addr, c.timeout),
			"retry, or raise --timeout")
	}
	return withFix(fmt.Sprintf("%s: %s", op, what), fix)
}

// innerStatus returns the gRPC status err wraps, with the broker's own
// message (status.FromError would return the whole wrapped text).
func innerStatus(err error) (*status.Status, bool) {
	if err == nil {
		return status.New(codes.OK, ""), false
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus(), true
	}
	return status.New(codes.Unknown, err.Error()), false
}

// withFix returns msg, followed by "; fix" if there is one.
func withFix(msg, fix string) error {
	if fix != "" {
		msg += "; " + fix
	}
	return errors.New(msg)
}

// keyHint is the usual fix for failures about a named key.
func keyHint(reason string) string {
	switch reason {
	case "key_not_found":
		return "'kbsctl key list' lists the keys"
	case "key_version_not_found":
		return "'kbsctl key get ID' lists the key's versions"
	case "key_exists":
		return "choose another id, or add a version with 'kbsctl key rotate ID'"
	case "key_destroyed":
		return "a destroyed key or version is final; create a new key"
	case "key_disabled":
		return "enable it with 'kbsctl key enable'"
	}
	return ""
}

// jsonOptions print protobuf messages for --json and for policies: proto
// field names (spiffe_ids, not spiffeIds), as in the .proto files.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true}

// printJSON writes m as indented JSON followed by a newline. protojson
// deliberately varies its whitespace between builds; re-indenting with
// encoding/json makes the output stable, so that saved policies diff
// cleanly.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("encode %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

// call returns the context for one call to the broker, bounded by
// --timeout.
func (c *conn) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// adminCall dials the broker with c's flags, makes one AdminService call
// bounded by --timeout, and explains a failure as op with hint (see
// conn.explain). Commands that page through a list make several calls and
// dial themselves.
func adminCall[T any](ctx context.Context, e *env, c *connFlags, op string, hint func(reason string) string,
	rpc func(context.Context, kbsv1.AdminServiceClient) (T, error)) (T, error) {
	var zero T
	kc, err := c.dial(ctx, e)
	if err != nil {
		return zero, err
	}
	defer kc.Close()
	cctx, cancel := kc.call(ctx)
	defer cancel()
	resp, err := rpc(cctx, kc.Admin())
	if err != nil {
		return zero, kc.explain(ctx, op, err, hint)
	}
	return resp, nil
}
