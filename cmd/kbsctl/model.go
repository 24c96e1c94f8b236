package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cml-project/cml/emdl"
	"github.com/cml-project/cml/internal/progress"
)

// Helpers shared by the model commands.

// newBar returns the progress line for a model operation, or nil (no
// display) when --quiet is set or stderr is not a terminal.
func (e *env) newBar(quiet bool, label string, total int64) *progress.Bar {
	if quiet || !e.terminal {
		return nil
	}
	return progress.New(e.stderr, progress.Options{Label: label, Total: total, Now: e.now})
}

// progressFunc adapts bar to the emdl Progress callback (nil: no callback).
func progressFunc(bar *progress.Bar) func(int64) {
	if bar == nil {
		return nil
	}
	return bar.Add
}

// finishBar ends the progress line: a summary on success, an erased line
// before an error message.
func finishBar(bar *progress.Bar, err error) {
	if err != nil {
		bar.Clear()
	} else {
		bar.Done()
	}
}

// printSummary prints the one-line success summary of encrypt or decrypt.
func printSummary(e *env, verb string, s emdl.Summary, elapsed time.Duration, from, to string) {
	files := "files"
	if s.Files == 1 {
		files = "file"
	}
	secs := elapsed.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(s.Bytes) / 1e6 / secs
	}
	fmt.Fprintf(e.stdout, "%s %d %s, %d bytes in %.2f s (%.1f MB/s): %s -> %s\n",
		verb, s.Files, files, s.Bytes, secs, rate, from, to)
}

// keyVersionFlag validates a --key-version value; zero is allowed only when
// optional (it then means "any version").
func keyVersionFlag(v uint, optional bool) (uint32, error) {
	if v > math.MaxUint32 {
		return 0, usagef("--key-version %d is out of range (1 to %d)", v, uint32(math.MaxUint32))
	}
	if v == 0 && !optional {
		return 0, usagef("--key-version must be at least 1")
	}
	return uint32(v), nil
}

// plaintextSize is the total size of the regular files under path (or of
// path itself), for the progress display. Errors are left to emdl, which
// reports them with more context; the size is then just unknown.
func plaintextSize(path string) int64 {
	var total int64
	err := filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0
	}
	return total
}

// interrupted turns the error of an operation cut short by SIGINT/SIGTERM
// into a message saying what was left behind (nothing: emdl removes its
// temporary output). It returns nil if ctx was not cancelled.
func interrupted(ctx context.Context, err error, out string) error {
	if ctx.Err() == nil || !errors.Is(err, context.Canceled) {
		return nil
	}
	if _, serr := os.Lstat(out); serr == nil && !isEmptyDir(out) {
		return fmt.Errorf("interrupted; %s may be incomplete, remove it: %w", out, err)
	}
	return fmt.Errorf("interrupted; nothing was written to %s: %w", out, context.Canceled)
}

// checkModelDir reports a missing or non-directory model path plainly,
// before emdl would call it a model with a missing manifest.
func checkModelDir(verb, path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s: no such directory; pass the directory that 'kbsctl model encrypt --out' created", verb, path)
	case err != nil:
		return fmt.Errorf("%s %s: %w", verb, path, unwrapPathError(err))
	case !fi.IsDir():
		return fmt.Errorf("%s %s: not a directory; an encrypted model is the directory that 'kbsctl model encrypt --out' created", verb, path)
	}
	return nil
}

func isEmptyDir(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	return len(names) == 0 && err == io.EOF
}

// modelError is an emdl error reworded for the command line; it still
// unwraps to the emdl error, so errors.Is works on it.
type modelError struct {
	msg string
	err error
}

func (m *modelError) Error() string { return m.msg }
func (m *modelError) Unwrap() error { return m.err }

// explainModelError words an emdl error of operation op ("encrypt",
// "decrypt", "inspect") on path as "<op> <path>: <what emdl found>; <fix>"
// and picks the exit code: exitRefused when decrypt or inspect refused the
// model itself. emdl's message already names the file within the model and
// the exact check that failed.
func explainModelError(op, path string, err error) error {
	hint := ""
	refused := true
	var ee *emdl.Error
	reason := ""
	if errors.As(err, &ee) {
		reason = ee.Reason
	}
	switch {
	case errors.Is(err, emdl.ErrWrongKey):
		hint = fmt.Sprintf("pass the right --key-file ('kbsctl model inspect %s' shows the key id and version the model needs)", path)
	case errors.Is(err, emdl.ErrKeyMismatch):
		hint = fmt.Sprintf("check --key-id and --key-version against 'kbsctl model inspect %s'", path)
	case errors.Is(err, emdl.ErrTampered) && reason == plaintextHashReason:
		// Every chunk authenticated under the key, so the file is what the
		// encryptor wrote; the manifest, authenticated too, holds a hash the
		// encryptor got wrong. Not tampering: nothing without the key can
		// produce either.
		hint = "every chunk of this file authenticated, so it was not modified after encryption: the encryptor recorded a wrong hash in the manifest " +
			"(an encryptor bug, or a manifest written by another tool); re-encrypt the model from its original plaintext with 'kbsctl model encrypt' " +
			"and report it if kbsctl wrote this model (without --verify-plaintext-hash it decrypts without this check)"
	case errors.Is(err, emdl.ErrTampered) && strings.Contains(reason, "belongs to another model"):
		hint = "the file was copied in from another encrypted model; copy this model again from a trusted copy"
	case errors.Is(err, emdl.ErrTampered):
		hint = "the model was modified after it was encrypted (tampering, or corruption in storage or in a copy); restore it from a trusted copy"
	case errors.Is(err, emdl.ErrTruncated):
		hint = "the file is shorter than when it was encrypted (an interrupted copy?); copy the model again"
	case errors.Is(err, emdl.ErrExtended):
		hint = "data was added to the file after it was encrypted; restore the model from a trusted copy"
	case errors.Is(err, emdl.ErrUnsupported) && op == "encrypt":
		hint = "the input exceeds a limit of the EMDL v1 format; leave out files the model does not need"
	case errors.Is(err, emdl.ErrUnsupported):
		hint = "the model uses a format version, suite or limit this kbsctl does not know; decrypt it with a newer kbsctl, or re-encrypt it"
	case errors.Is(err, emdl.ErrUnsafePath) && op == "encrypt":
		hint = "--in must hold only regular files and directories, and --out must be outside --in"
	case errors.Is(err, emdl.ErrUnsafePath):
		hint = "the model is refused: a model directory holds only the regular files 'kbsctl model encrypt' wrote; replace links and special files with plain copies, or restore the model from a trusted copy"
	case errors.Is(err, emdl.ErrNotInManifest):
		hint = "remove the stray file, or restore the model from a trusted copy"
	case errors.Is(err, emdl.ErrMissingFile) && isManifestError(err):
		hint = "is this a model directory written by 'kbsctl model encrypt'? If it was one, restore it from a trusted copy"
	case errors.Is(err, emdl.ErrMissingFile):
		hint = "copy the model again (the manifest lists this file, so the copy is incomplete)"
	case errors.Is(err, emdl.ErrOutputExists) && op == "encrypt":
		refused, hint = false, "choose an --out that does not exist or is an empty directory"
	case errors.Is(err, emdl.ErrOutputExists):
		refused, hint = false, "choose an --out that does not exist"
	default:
		refused = false
	}
	msg := fmt.Sprintf("%s %s: %s", op, path, strings.TrimPrefix(err.Error(), "emdl: "))
	if hint != "" {
		msg += "; " + hint
	}
	var out error = &modelError{msg: msg, err: err}
	if refused && op != "encrypt" {
		out = &codedError{code: exitRefused, err: out}
	}
	return out
}

// plaintextHashReason is emdl's Reason for a file whose chunks all
// authenticated but whose plaintext SHA-256 is not the manifest's
// (TestExplainModelErrorInconsistentHash checks it against a real one).
const plaintextHashReason = "plaintext SHA-256 does not match the manifest"

func isManifestError(err error) bool {
	var ee *emdl.Error
	return errors.As(err, &ee) && ee.Path == emdl.ManifestName
}
