package kek

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Size is the size in bytes of a local KEK (AES-256).
const Size = 32

// EnvVar is the environment variable [LoadEnv] reads.
const EnvVar = "CML_KEK"

// maxFileSize bounds how much of a KEK file is read: 64 hex digits plus "\r\n".
const maxFileSize = 2*Size + 2

// Provider seals and opens the secrets of the keystore. Implementations must
// be safe for concurrent use, must authenticate additionalData, and must never
// return a plaintext whose authentication failed.
type Provider interface {
	// Seal encrypts and authenticates plaintext and additionalData and returns
	// a self-contained sealed value.
	Seal(ctx context.Context, plaintext, additionalData []byte) ([]byte, error)
	// Open authenticates and decrypts a value returned by Seal with the same
	// additionalData. A failed authentication returns an error that wraps
	// [ErrAuth].
	Open(ctx context.Context, sealed, additionalData []byte) ([]byte, error)
}

var (
	// ErrAuth is returned by Open when the sealed value or its additional data
	// does not authenticate under this KEK: a wrong KEK, a corrupted value, or
	// a value moved to another record.
	ErrAuth = errors.New("kek: message authentication failed")
	// ErrNotSet is returned by LoadEnv when the variable is not set.
	ErrNotSet = errors.New("kek: environment variable not set")
)

// Local is a Provider holding a 256-bit AES-GCM KEK in process memory.
type Local struct {
	aead cipher.AEAD
}

var _ Provider = (*Local)(nil)

// New returns a Local provider for a raw 32-byte key. The key is not retained
// beyond the expanded AES key schedule.
func New(key []byte) (*Local, error) {
	if len(key) != Size {
		return nil, fmt.Errorf("kek: key is %d bytes, want %d", len(key), Size)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("kek: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("kek: %w", err)
	}
	return &Local{aead: aead}, nil
}

// Seal implements Provider: the result is nonce(12) ‖ ciphertext ‖ tag(16).
func (l *Local) Seal(ctx context.Context, plaintext, additionalData []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kek: seal: %w", err)
	}
	return l.aead.Seal(nil, nil, plaintext, additionalData), nil
}

// Open implements Provider.
func (l *Local) Open(ctx context.Context, sealed, additionalData []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kek: open: %w", err)
	}
	if len(sealed) < l.aead.Overhead() {
		return nil, fmt.Errorf("%w: sealed value is %d bytes, shorter than the %d-byte nonce and tag", ErrAuth, len(sealed), l.aead.Overhead())
	}
	pt, err := l.aead.Open(nil, nil, sealed, additionalData)
	if err != nil {
		return nil, ErrAuth
	}
	return pt, nil
}

// String never prints key material.
func (l *Local) String() string { return "kek.Local(AES-256-GCM, key redacted)" }

// GoString never prints key material.
func (l *Local) GoString() string { return l.String() }

// ParseKey decodes the KEK text format (see the package documentation) into
// 32 key bytes. Errors describe the problem without echoing the input.
func ParseKey(text []byte) ([]byte, error) {
	switch {
	case len(text) == 2*Size+2 && text[2*Size] == '\r' && text[2*Size+1] == '\n':
		text = text[:2*Size]
	case len(text) == 2*Size+1 && text[2*Size] == '\n':
		text = text[:2*Size]
	case len(text) == 2*Size:
	default:
		return nil, fmt.Errorf("kek: want exactly %d hex digits and an optional newline, got %d bytes", 2*Size, len(text))
	}
	key := make([]byte, Size)
	if _, err := hex.Decode(key, text); err != nil {
		clear(key)
		return nil, errors.New("kek: not hexadecimal: want exactly 64 hex digits")
	}
	return key, nil
}

// FormatKey returns the text form of a raw key: lower-case hex and a newline.
func FormatKey(key []byte) []byte {
	out := make([]byte, hex.EncodedLen(len(key))+1)
	hex.Encode(out, key)
	out[len(out)-1] = '\n'
	return out
}

// Init creates a KEK file at path holding 32 fresh random bytes in the text
// format, with mode 0600. It refuses to overwrite an existing file; on any
// error it leaves no file behind.
func Init(path string) (err error) {
	key := make([]byte, Size)
	defer clear(key)
	rand.Read(key) // never fails (crypto/rand, Go ≥ 1.24)
	text := FormatKey(key)
	defer clear(text)

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("kek: %s already exists; refusing to overwrite a KEK (it would make the keystore unreadable): %w", path, err)
		}
		return fmt.Errorf("kek: create %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	// The umask may have narrowed the mode; it can never have widened it, but
	// set it explicitly so the file is exactly 0600.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("kek: chmod %s: %w", path, err)
	}
	if _, err := f.Write(text); err != nil {
		return fmt.Errorf("kek: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("kek: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("kek: close %s: %w", path, err)
	}
	return nil
}

// LoadFile reads a KEK file written by Init. It refuses a file that is not a
// regular file, that grants any permission to group or others, or whose
// content is not exactly the text format; every error names the file.
func LoadFile(path string) (*Local, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kek: open KEK file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("kek: stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("kek: %s is not a regular file (mode %s)", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("kek: %s has mode %#o, readable or writable by group or others; run: chmod 600 %s", path, perm, path)
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("kek: %s is %d bytes; a KEK file holds exactly 64 hex digits and an optional newline", path, fi.Size())
	}
	buf, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	defer clear(buf)
	if err != nil {
		return nil, fmt.Errorf("kek: read %s: %w", path, err)
	}
	key, err := ParseKey(buf)
	if err != nil {
		return nil, fmt.Errorf("kek: %s: %w", path, err)
	}
	defer clear(key)
	return New(key)
}

// LoadEnv reads the KEK from the CML_KEK environment variable through lookup
// (pass os.LookupEnv). An unset variable returns an error wrapping ErrNotSet.
func LoadEnv(lookup func(string) (string, bool)) (*Local, error) {
	v, ok := lookup(EnvVar)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotSet, EnvVar)
	}
	key, err := ParseKey([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("kek: environment variable %s: %w", EnvVar, err)
	}
	defer clear(key)
	return New(key)
}
