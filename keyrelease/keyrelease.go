package keyrelease

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Labels. Each is followed by a 0x00 byte in its encoding (see the package
// documentation), so one can never be read as a prefix of another.
const (
	LabelReportData = "cml/v1/report-data"
	LabelKeyRelease = "cml/v1/key-release"
	LabelKeyExport  = "cml/v1/key-export"
)

// NonceSize is the size of a challenge nonce.
const NonceSize = 32

// KEM is an HPKE KEM identifier (RFC 9180 §7.1); the values equal the
// cml.kbs.v1 HpkeKem enum numbers.
type KEM uint16

// The supported KEMs.
const (
	KEMX25519         KEM = 0x0020 // DHKEM(X25519, HKDF-SHA256), the default
	KEMMLKEM768X25519 KEM = 0x647a // MLKEM768-X25519, post-quantum hybrid
)

// KDF and AEAD identifiers of every suite of this protocol version.
const (
	KDFHKDFSHA256 uint16 = 0x0001
	AEADAES256GCM uint16 = 0x0002
)

// Errors.
var (
	// ErrUnsupportedKEM: the KEM is not one of KEMX25519 and KEMMLKEM768X25519.
	ErrUnsupportedKEM = errors.New("keyrelease: unsupported KEM")
	// ErrInvalidPublicKey: the public key has the wrong length for its KEM or
	// does not deserialize.
	ErrInvalidPublicKey = errors.New("keyrelease: invalid public key")
	// ErrOpen: the sealed key does not open (wrong private key, wrong info,
	// or tampered enc or ciphertext).
	ErrOpen = errors.New("keyrelease: sealed key does not open")
)

// String returns the KEM's name, or its number in hex if unsupported.
func (k KEM) String() string {
	switch k {
	case KEMX25519:
		return "X25519"
	case KEMMLKEM768X25519:
		return "MLKEM768X25519"
	}
	return fmt.Sprintf("KEM(0x%04x)", uint16(k))
}

// Supported reports whether k is one of the KEMs of this protocol.
func (k KEM) Supported() bool { return k == KEMX25519 || k == KEMMLKEM768X25519 }

// PublicKeySize returns the serialized public key size of k, or 0 if k is
// unsupported.
func (k KEM) PublicKeySize() int {
	switch k {
	case KEMX25519:
		return 32
	case KEMMLKEM768X25519:
		return 1216
	}
	return 0
}

// EncSize returns the size of k's encapsulated key, or 0 if k is
// unsupported.
func (k KEM) EncSize() int {
	switch k {
	case KEMX25519:
		return 32
	case KEMMLKEM768X25519:
		return 1120
	}
	return 0
}

func (k KEM) hpke() (hpke.KEM, error) {
	switch k {
	case KEMX25519:
		return hpke.DHKEM(ecdh.X25519()), nil
	case KEMMLKEM768X25519:
		return hpke.MLKEM768X25519(), nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnsupportedKEM, k)
}

// CheckPublicKey checks that pub is a well-formed public key of kem: the
// exact size and a successful deserialization.
func CheckPublicKey(kem KEM, pub []byte) error {
	_, err := publicKey(kem, pub)
	return err
}

func publicKey(kem KEM, pub []byte) (hpke.PublicKey, error) {
	k, err := kem.hpke()
	if err != nil {
		return nil, err
	}
	if len(pub) != kem.PublicKeySize() {
		return nil, fmt.Errorf("%w: %s public key is %d bytes, want %d", ErrInvalidPublicKey, kem, len(pub), kem.PublicKeySize())
	}
	pk, err := k.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %s public key does not deserialize", ErrInvalidPublicKey, kem)
	}
	return pk, nil
}

// ReportData returns the REPORTDATA that binds nonce and the public key pub
// of kem (see the package documentation for the bytes). It does not check
// kem or pub: the broker checks them first with CheckPublicKey. It panics if
// pub is longer than 65535 bytes, which no KEM's key is — the caller broke
// that invariant.
func ReportData(nonce []byte, kem KEM, pub []byte) [64]byte {
	if len(pub) > math.MaxUint16 {
		panic("keyrelease: ReportData: public key longer than 65535 bytes; check it with CheckPublicKey first")
	}
	h := sha512.New()
	h.Write([]byte(LabelReportData))
	h.Write([]byte{0})
	h.Write(nonce)
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:2], uint16(kem))
	binary.BigEndian.PutUint16(b[2:4], uint16(len(pub)))
	h.Write(b[:])
	h.Write(pub)
	var out [64]byte
	h.Sum(out[:0])
	return out
}

// ReleaseInfo returns the HPKE info of a key release: the key id, the
// version actually released and the challenge nonce. Key ids are at most 128
// bytes; ReleaseInfo panics on one longer than 65535 bytes (a broken
// invariant: callers validate key ids first).
func ReleaseInfo(keyID string, version uint32, nonce []byte) []byte {
	b := appendKeyInfo(nil, LabelKeyRelease, keyID, version)
	return append(b, nonce...)
}

// ExportInfo returns the HPKE info of a key export to an administrator.
// Same key id constraint as ReleaseInfo.
func ExportInfo(keyID string, version uint32) []byte {
	return appendKeyInfo(nil, LabelKeyExport, keyID, version)
}

func appendKeyInfo(b []byte, label, keyID string, version uint32) []byte {
	if len(keyID) > math.MaxUint16 {
		panic("keyrelease: key id longer than 65535 bytes; validate key ids first")
	}
	b = append(b, label...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(keyID)))
	b = append(b, keyID...)
	return binary.BigEndian.AppendUint32(b, version)
}

// GenerateKey returns a fresh ephemeral key pair of kem: the private key for
// Open and the serialized public key to send (and bind in REPORTDATA).
func GenerateKey(kem KEM) (hpke.PrivateKey, []byte, error) {
	k, err := kem.hpke()
	if err != nil {
		return nil, nil, err
	}
	priv, err := k.GenerateKey()
	if err != nil {
		return nil, nil, fmt.Errorf("keyrelease: generate %s key: %w", kem, err)
	}
	return priv, priv.PublicKey().Bytes(), nil
}

// Seal encrypts key to the public key pub of kem with the given info, and
// returns the encapsulated key and the ciphertext (len(key)+16 bytes) as
// they travel in a SealedKey.
func Seal(kem KEM, pub, info, key []byte) (enc, ciphertext []byte, err error) {
	pk, err := publicKey(kem, pub)
	if err != nil {
		return nil, nil, err
	}
	out, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), info, key)
	if err != nil {
		// For X25519 this is a low-order public key (all-zero shared secret).
		return nil, nil, fmt.Errorf("%w: %s encapsulation failed: %v", ErrInvalidPublicKey, kem, err)
	}
	n := kem.EncSize()
	if len(out) < n {
		panic("keyrelease: hpke.Seal returned less than an encapsulated key")
	}
	return out[:n:n], out[n:], nil
}

// Open decrypts a key sealed with Seal to priv's public key under info. Any
// mismatch (private key, info, enc, ciphertext) is ErrOpen. The caller owns
// the result and should clear it when done.
func Open(priv hpke.PrivateKey, info, enc, ciphertext []byte) ([]byte, error) {
	if priv == nil {
		return nil, fmt.Errorf("%w: no private key", ErrOpen)
	}
	kem := KEM(priv.KEM().ID())
	if !kem.Supported() {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedKEM, kem)
	}
	if len(enc) != kem.EncSize() {
		return nil, fmt.Errorf("%w: %s enc is %d bytes, want %d", ErrOpen, kem, len(enc), kem.EncSize())
	}
	in := make([]byte, 0, len(enc)+len(ciphertext))
	in = append(append(in, enc...), ciphertext...)
	key, err := hpke.Open(priv, hpke.HKDFSHA256(), hpke.AES256GCM(), info, in)
	if err != nil {
		return nil, ErrOpen
	}
	return key, nil
}
