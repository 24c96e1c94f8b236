package emdl

import "errors"

// Sentinel errors. Every refusal of a model is an *Error that wraps exactly
// one of them, so callers can branch with errors.Is. I/O failures are *Error
// values that wrap the underlying cause instead (an *fs.PathError, …).
var (
	// ErrWrongKey: the key check value in a header does not match the key.
	// Either the key is not the one the model was encrypted with, or the
	// header's salt or key-check bytes were altered.
	ErrWrongKey = errors.New("emdl: wrong key")
	// ErrKeyMismatch: the model names a key id or version other than the one
	// the caller asked for in DecryptOptions.
	ErrKeyMismatch = errors.New("emdl: model is for another key id or version")
	// ErrTampered: an authentication check failed (header MAC, a chunk's tag,
	// the manifest, a plaintext hash, a header that is not the one the
	// manifest lists) or a header is malformed.
	ErrTampered = errors.New("emdl: tampered or corrupted")
	// ErrTruncated: a file or the manifest is shorter than its header says.
	ErrTruncated = errors.New("emdl: truncated")
	// ErrExtended: a file or the manifest is longer than its header says.
	ErrExtended = errors.New("emdl: extended")
	// ErrUnsupported: an unknown format version or suite, or a value beyond
	// this implementation's limits.
	ErrUnsupported = errors.New("emdl: unsupported version, suite or limit")
	// ErrUnsafePath: a path is absolute, has "..", "." or empty elements, a
	// backslash or NUL, is a duplicate or is reserved; or a symlink or
	// another non-regular file was found.
	ErrUnsafePath = errors.New("emdl: unsafe path")
	// ErrNotInManifest: the model directory holds a file the manifest does
	// not list.
	ErrNotInManifest = errors.New("emdl: file not in manifest")
	// ErrMissingFile: a file the manifest lists (or the manifest itself) is
	// missing from the model directory.
	ErrMissingFile = errors.New("emdl: missing file")
	// ErrOutputExists: the output path already exists (Decrypt), or exists
	// and is not an empty directory (Encrypt).
	ErrOutputExists = errors.New("emdl: output already exists")
)

var sentinels = [...]error{
	ErrWrongKey, ErrKeyMismatch, ErrTampered, ErrTruncated, ErrExtended,
	ErrUnsupported, ErrUnsafePath, ErrNotInManifest, ErrMissingFile, ErrOutputExists,
}

// Error is the error type of every failure that concerns one file of a model
// (or the input/output path).
type Error struct {
	// Path is the file's slash-separated path relative to the model
	// directory (ManifestName for the manifest). For errors about the input
	// tree of Encrypt it is relative to the input; for ErrOutputExists it is
	// the output path as given.
	Path string
	// Err is one of the sentinels above, or the wrapped cause of an I/O error.
	Err error
	// Reason says what exactly failed, e.g. "chunk 3 failed authentication".
	Reason string
}

func (e *Error) Error() string {
	msg := "emdl: "
	if e.Path != "" {
		msg += e.Path + ": "
	}
	switch {
	case e.Reason == "":
		return msg + e.Err.Error()
	case isSentinel(e.Err):
		return msg + e.Reason
	default:
		return msg + e.Reason + ": " + e.Err.Error()
	}
}

func (e *Error) Unwrap() error { return e.Err }

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if err == s {
			return true
		}
	}
	return false
}

func newError(path string, sentinel error, reason string) *Error {
	return &Error{Path: path, Err: sentinel, Reason: reason}
}
