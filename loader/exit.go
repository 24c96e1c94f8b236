package loader

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/client"
	"github.com/cml-project/cml/emdl"
)

// Exit codes of cml-loader. They are part of its contract (docs/loader.md):
// Kubernetes shows them as the init container's termination reason.
const (
	ExitOK          = 0 // the model is decrypted at --dst
	ExitFailure     = 1 // anything else: I/O, the quote provider, the broker's identity, ...
	ExitUsage       = 2 // bad flags or environment, or --dst is not absent or empty
	ExitDenied      = 3 // the broker refused the release (reason code and request id logged)
	ExitUnavailable = 4 // the broker or the SPIRE agent did not answer before --timeout
	ExitBadModel    = 5 // tampered, truncated or unsafe model, wrong key, key id/version mismatch
)

// UsageError is a configuration that cannot work: a missing or invalid
// setting, or a --dst that is not absent or an empty directory.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return "loader: " + e.Msg }

// ErrKeyMismatch: the model's header names another key id or version than
// --key/--key-version, or the broker released another one.
var ErrKeyMismatch = errors.New("loader: model is for another key")

// errTimeout marks a failure after the --timeout budget ran out while
// waiting for the broker or the identity source.
var errTimeout = errors.New("loader: timed out waiting for the key broker or the SPIRE agent")

// ExitCode maps an error of Run to the process exit code.
func ExitCode(err error) int {
	var (
		ue *UsageError
		de *client.DeniedError
		un *client.UnavailableError
	)
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &de):
		return ExitDenied
	case errors.Is(err, ErrKeyMismatch), isBadModel(err):
		return ExitBadModel
	case errors.As(err, &un), errors.Is(err, errTimeout):
		return ExitUnavailable
	case errors.Is(err, client.ErrServerIdentity):
		return ExitFailure
	case status.Code(err) == codes.Unavailable:
		return ExitUnavailable
	}
	return ExitFailure
}

// isBadModel reports whether err is emdl's refusal of the model itself
// (not an I/O error, not an existing output).
func isBadModel(err error) bool {
	for _, s := range []error{
		emdl.ErrWrongKey, emdl.ErrKeyMismatch, emdl.ErrTampered, emdl.ErrTruncated, emdl.ErrExtended,
		emdl.ErrUnsupported, emdl.ErrUnsafePath, emdl.ErrNotInManifest, emdl.ErrMissingFile,
	} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// timedOut wraps err as a timeout if the attestation budget ctx has run out
// (and err is not a decision of the broker).
func timedOut(ctx context.Context, err error) error {
	var de *client.DeniedError
	if err == nil || errors.As(err, &de) || ctx.Err() == nil {
		return err
	}
	return errors.Join(errTimeout, err)
}
