package client

import (
	"context"
	"crypto/hpke"
	"errors"
	"fmt"
	"strings"

	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/tdx/quote"
)

// AlgorithmAES256GCM is ReleasedKey.Algorithm of a 256-bit model key (EMDL).
const AlgorithmAES256GCM = "AES_256_GCM"

// maxKeyIDLen is the longest key id of the protocol.
const maxKeyIDLen = 128

// ReleasedKey is a key version the broker released (or exported), in clear.
// Call Zero when done with it.
type ReleasedKey struct {
	KeyID         string
	Version       uint32 // the version released, never 0
	Algorithm     string // AlgorithmAES256GCM
	PolicyVersion uint32 // policy version that allowed the release; 0 for an export
	RequestID     string // as in the broker's audit record
	Key           []byte
}

// Zero overwrites the key bytes with zeros. The Go runtime may have copied
// them before (the garbage collector moves nothing, but buffers of the
// decryption were on the heap); Zero clears the copy the caller holds.
func (k *ReleasedKey) Zero() {
	if k != nil {
		clear(k.Key)
	}
}

// ReleaseKey runs the key release protocol (DESIGN §4) for version of keyID
// (0: the key's primary version) and returns the key in clear:
//
//  1. GetChallenge: a single-use nonce bound to this caller and key id;
//  2. a fresh ephemeral HPKE key pair (X25519, or MLKEM768-X25519 with
//     WithPostQuantum) whose private key never leaves this process;
//  3. a TDX quote from qp over keyrelease.ReportData(nonce, kem, public key);
//  4. ReleaseKey, then keyrelease.Open of the sealed key with the release
//     info, after checking the response names the key id and version asked
//     for.
//
// A refusal is a *DeniedError. With WithRetry, an unreachable broker
// (Unavailable), or a GetChallenge refused with ResourceExhausted
// "too_many_challenges", repeats the whole protocol with a fresh challenge
// and key pair; nothing else is retried. Other errors keep their gRPC status
// (status.Code works on them).
//
// The ephemeral private key is dropped after each attempt; crypto/hpke does
// not expose its bytes, so it cannot be zeroed, only left to the garbage
// collector. The nonce is cleared.
func (c *Client) ReleaseKey(ctx context.Context, keyID string, version uint32, qp quote.Provider) (*ReleasedKey, error) {
	if err := checkKeyID(keyID); err != nil {
		return nil, err
	}
	if qp == nil {
		return nil, errors.New("client: ReleaseKey needs a quote provider")
	}
	var rk *ReleasedKey
	err := c.do(ctx, func(ctx context.Context) error {
		var err error
		rk, err = c.releaseOnce(ctx, keyID, version, qp)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rk, nil
}

func (c *Client) kem() keyrelease.KEM {
	if c.opts.postQuantum {
		return keyrelease.KEMMLKEM768X25519
	}
	return keyrelease.KEMX25519
}

func (c *Client) releaseOnce(ctx context.Context, keyID string, version uint32, qp quote.Provider) (*ReleasedKey, error) {
	ch, err := c.broker.GetChallenge(ctx, &kbsv1.GetChallengeRequest{KeyId: keyID})
	if err != nil {
		return nil, wrapRPC("GetChallenge", err)
	}
	nonce := ch.GetNonce()
	defer clear(nonce)
	if len(nonce) != keyrelease.NonceSize {
		return nil, fmt.Errorf("client: GetChallenge returned a %d-byte nonce, want %d", len(nonce), keyrelease.NonceSize)
	}

	kem := c.kem()
	priv, pub, err := keyrelease.GenerateKey(kem)
	if err != nil {
		return nil, fmt.Errorf("client: generating the ephemeral %s key: %w", kem, err)
	}
	q, err := qp.GetQuote(ctx, keyrelease.ReportData(nonce, kem, pub))
	if err != nil {
		return nil, fmt.Errorf("client: getting a TDX quote: %w", err)
	}
	resp, err := c.broker.ReleaseKey(ctx, &kbsv1.ReleaseKeyRequest{
		KeyId:        keyID,
		KeyVersion:   version,
		Nonce:        nonce,
		Quote:        q,
		KemId:        kbsv1.HpkeKem(kem),
		TeePublicKey: pub,
	})
	if err != nil {
		return nil, wrapRPC("ReleaseKey", err)
	}
	if err := checkResponse("ReleaseKey", keyID, version, kem, resp.GetKeyId(), resp.GetKeyVersion(), resp.GetSealedKey()); err != nil {
		return nil, err
	}
	info := keyrelease.ReleaseInfo(resp.GetKeyId(), resp.GetKeyVersion(), nonce)
	return open(priv, info, resp.GetSealedKey(), resp.GetAlgorithm(), &ReleasedKey{
		KeyID:         resp.GetKeyId(),
		Version:       resp.GetKeyVersion(),
		PolicyVersion: resp.GetPolicyVersion(),
		RequestID:     printable(resp.GetRequestId()),
	})
}

// ExportKey exports version of keyID (0: the primary version) to this
// administrator: AdminService.ExportKey with a fresh ephemeral HPKE key pair,
// opened with the export info. Only callers with the admin role may export;
// anyone else gets a *DeniedError. WithRetry repeats the export on
// Unavailable (each attempt is audited).
func (c *Client) ExportKey(ctx context.Context, keyID string, version uint32) (*ReleasedKey, error) {
	if err := checkKeyID(keyID); err != nil {
		return nil, err
	}
	var rk *ReleasedKey
	err := c.do(ctx, func(ctx context.Context) error {
		var err error
		rk, err = c.exportOnce(ctx, keyID, version)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rk, nil
}

func (c *Client) exportOnce(ctx context.Context, keyID string, version uint32) (*ReleasedKey, error) {
	kem := c.kem()
	priv, pub, err := keyrelease.GenerateKey(kem)
	if err != nil {
		return nil, fmt.Errorf("client: generating the ephemeral %s key: %w", kem, err)
	}
	resp, err := c.admin.ExportKey(ctx, &kbsv1.ExportKeyRequest{
		KeyId:      keyID,
		KeyVersion: version,
		KemId:      kbsv1.HpkeKem(kem),
		PublicKey:  pub,
	})
	if err != nil {
		return nil, wrapRPC("ExportKey", err)
	}
	if err := checkResponse("ExportKey", keyID, version, kem, resp.GetKeyId(), resp.GetKeyVersion(), resp.GetSealedKey()); err != nil {
		return nil, err
	}
	info := keyrelease.ExportInfo(resp.GetKeyId(), resp.GetKeyVersion())
	return open(priv, info, resp.GetSealedKey(), resp.GetAlgorithm(), &ReleasedKey{
		KeyID:     resp.GetKeyId(),
		Version:   resp.GetKeyVersion(),
		RequestID: printable(resp.GetRequestId()),
	})
}

// checkResponse checks that the broker answered for the key id and version
// asked (version 0: any version from 1) and sealed with our KEM and suite.
func checkResponse(rpc, keyID string, version uint32, kem keyrelease.KEM, gotID string, gotVersion uint32, sk *kbsv1.SealedKey) error {
	if gotID != keyID {
		return fmt.Errorf("client: %s answered for key id %q, asked for %q", rpc, printable(gotID), keyID)
	}
	if gotVersion == 0 || (version != 0 && gotVersion != version) {
		return fmt.Errorf("client: %s answered with version %d of key %q, asked for %s", rpc, gotVersion, keyID, versionText(version))
	}
	if sk == nil {
		return fmt.Errorf("client: %s returned no sealed key", rpc)
	}
	if keyrelease.KEM(sk.GetKemId()) != kem {
		return fmt.Errorf("client: %s sealed the key with KEM %s, asked for %s", rpc, keyrelease.KEM(sk.GetKemId()), kem)
	}
	if kdf := sk.GetKdfId(); kdf != kbsv1.HpkeKdf_HPKE_KDF_UNSPECIFIED && uint16(kdf) != keyrelease.KDFHKDFSHA256 {
		return fmt.Errorf("client: %s sealed the key with unsupported KDF %d", rpc, kdf)
	}
	if aead := sk.GetAeadId(); aead != kbsv1.HpkeAead_HPKE_AEAD_UNSPECIFIED && uint16(aead) != keyrelease.AEADAES256GCM {
		return fmt.Errorf("client: %s sealed the key with unsupported AEAD %d", rpc, aead)
	}
	return nil
}

func versionText(v uint32) string {
	if v == 0 {
		return "the primary version"
	}
	return fmt.Sprintf("version %d", v)
}

// open decrypts the sealed key into rk and checks its size for its
// algorithm. An unknown algorithm is refused: the caller could not use the
// bytes correctly.
func open(priv hpke.PrivateKey, info []byte, sk *kbsv1.SealedKey, alg kbsv1.KeyAlgorithm, rk *ReleasedKey) (*ReleasedKey, error) {
	var size int
	switch alg {
	case kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM:
		rk.Algorithm, size = AlgorithmAES256GCM, 32
	default:
		return nil, fmt.Errorf("client: key %q version %d has unsupported algorithm %s", rk.KeyID, rk.Version, alg)
	}
	key, err := keyrelease.Open(priv, info, sk.GetEnc(), sk.GetCiphertext())
	if err != nil {
		return nil, fmt.Errorf("client: key %q version %d: %w", rk.KeyID, rk.Version, err)
	}
	if len(key) != size {
		clear(key)
		return nil, fmt.Errorf("client: key %q version %d is %d bytes, want %d for %s", rk.KeyID, rk.Version, len(key), size, rk.Algorithm)
	}
	rk.Key = key
	return rk, nil
}

// checkKeyID checks the key id syntax of the protocol: 1 to 128 characters
// of [A-Za-z0-9._-].
func checkKeyID(id string) error {
	if id == "" || len(id) > maxKeyIDLen {
		return fmt.Errorf("client: key id %q must be 1 to %d characters", printable(id), maxKeyIDLen)
	}
	if i := strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}); i >= 0 {
		return fmt.Errorf("client: key id %q has a character outside [A-Za-z0-9._-] at byte %d", printable(id), i)
	}
	return nil
}

// wrapRPC names the RPC in err, keeping a *DeniedError as it is (it names
// the broker's decision) and the gRPC status visible to status.Code.
func wrapRPC(rpc string, err error) error {
	var d *DeniedError
	if errors.As(err, &d) {
		return err
	}
	return fmt.Errorf("client: %s: %w", rpc, err)
}
