package main

import (
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/cml-project/cml/emdl"
)

// keyHexLen is the length of a key file's content without the trailing
// newline: the 256-bit key as lowercase (or uppercase) hex digits.
const keyHexLen = 2 * emdl.KeySize

// maxKeyFileSize bounds what readKeyFile reads: a key file is 65 bytes; a
// little trailing whitespace is tolerated, a large file is not a key file.
const maxKeyFileSize = 1024

const keyFileFormat = "a key file holds exactly 64 hex digits (a 256-bit key) and an optional newline, as written by 'kbsctl model keygen FILE'"

// errNotKey wraps every content error of parseKey.
var errNotKey = errors.New("not a key")

// parseKey decodes the content of a key file: 64 hex digits, optionally
// followed by whitespace. Errors never quote the content, only positions and
// lengths, so a mistaken --key-file (a private key, a password file) does
// not end up in a terminal scroll-back or a CI log.
func parseKey(data []byte) ([]byte, error) {
	end := len(data)
	for end > 0 && isSpace(data[end-1]) {
		end--
	}
	text := data[:end]
	if len(text) == 0 {
		return nil, fmt.Errorf("%w: the file is empty", errNotKey)
	}
	for i, c := range text {
		if i >= keyHexLen {
			break
		}
		if !isHex(c) {
			return nil, fmt.Errorf("%w: character %d is not a hex digit", errNotKey, i+1)
		}
	}
	if len(text) != keyHexLen {
		return nil, fmt.Errorf("%w: found %d characters before the trailing whitespace, want %d", errNotKey, len(text), keyHexLen)
	}
	key := make([]byte, emdl.KeySize)
	if _, err := hex.Decode(key, text); err != nil {
		// Unreachable after the checks above; the hex error would quote
		// content, so it is not passed on.
		return nil, fmt.Errorf("%w: invalid hex", errNotKey)
	}
	if subtle.ConstantTimeCompare(key, make([]byte, emdl.KeySize)) == 1 {
		return nil, fmt.Errorf("%w: the key is all zeros", errNotKey)
	}
	return key, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// readKeyFile reads and parses the key file at path, named in errors as
// flagName (e.g. "--key-file"). A file readable by group or others is used,
// with a warning on warn. The caller should clear the returned key when done.
func readKeyFile(flagName, path string, warn io.Writer) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s %s: no such file; create a key with 'kbsctl model keygen %s'", flagName, path, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flagName, path, unwrapPathError(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flagName, path, unwrapPathError(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file; %s", flagName, path, keyFileFormat)
	}
	if fi.Size() > maxKeyFileSize {
		return nil, fmt.Errorf("%s %s: %d bytes is too large; %s", flagName, path, fi.Size(), keyFileFormat)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flagName, path, unwrapPathError(err))
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%s %s: more than %d bytes is too large; %s", flagName, path, maxKeyFileSize, keyFileFormat)
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w; %s", flagName, path, err, keyFileFormat)
	}
	if perm := fi.Mode().Perm(); perm&0o044 != 0 {
		fmt.Fprintf(warn, "kbsctl: warning: key file %s is readable by group or others (mode %04o); restrict it with 'chmod 600 %s'\n", path, perm, path)
	}
	return key, nil
}

// unwrapPathError drops the *fs.PathError wrapper (whose text repeats the
// path that the caller's message already names).
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
