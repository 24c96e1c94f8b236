package admin

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/policy"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store"
)

// Page sizes of the List RPCs.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, rpcstatus.Invalid("page_size: %d is negative", n)
	case n == 0:
		return DefaultPageSize, nil
	case n > MaxPageSize:
		return MaxPageSize, nil
	}
	return int(n), nil
}

// Page tokens are opaque to clients: base64url of "<kind>:<position>".
func encodeToken(kind, pos string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + pos))
}

func decodeToken(tok, kind string) (string, error) {
	if tok == "" {
		return "", nil
	}
	// Strict, and re-encoded to compare: the decoder skips newlines, and a
	// token has exactly one spelling.
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || base64.RawURLEncoding.EncodeToString(b) != tok {
		return "", rpcstatus.Invalid("page_token: not a token this server issued")
	}
	pos, ok := strings.CutPrefix(string(b), kind+":")
	if !ok || pos == "" {
		return "", rpcstatus.Invalid("page_token: not a token of this listing (pass the same filter as the previous page)")
	}
	return pos, nil
}

func algorithmOK(a kbsv1.KeyAlgorithm) error {
	if a != kbsv1.KeyAlgorithm_KEY_ALGORITHM_UNSPECIFIED && a != kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM {
		return rpcstatus.Invalid("algorithm: %s is not supported; use KEY_ALGORITHM_AES_256_GCM", a)
	}
	return nil
}

// CreateKey generates version 1 of a new key.
func (s *Service) CreateKey(ctx context.Context, req *kbsv1.CreateKeyRequest) (*kbsv1.CreateKeyResponse, error) {
	var out *kbsv1.CreateKeyResponse
	err := s.call(ctx, "CreateKey", req.GetKeyId(), func(e *audit.Entry) error {
		if err := validKeyID(req.GetKeyId()); err != nil {
			return err
		}
		if err := algorithmOK(req.GetAlgorithm()); err != nil {
			return err
		}
		k, err := s.cfg.Store.CreateKey(ctx, req.GetKeyId(), store.KeyOptions{Description: req.GetDescription(), Labels: req.GetLabels()})
		if err != nil {
			return err
		}
		e.KeyVersion = k.Primary
		out = &kbsv1.CreateKeyResponse{Key: keyProto(k)}
		return nil
	})
	return out, err
}

// ImportKey stores caller-supplied key bytes as a new key or a new version.
// The bytes are cleared from the request once stored.
func (s *Service) ImportKey(ctx context.Context, req *kbsv1.ImportKeyRequest) (*kbsv1.ImportKeyResponse, error) {
	defer clear(req.GetKeyMaterial())
	var out *kbsv1.ImportKeyResponse
	err := s.call(ctx, "ImportKey", req.GetKeyId(), func(e *audit.Entry) error {
		if err := validKeyID(req.GetKeyId()); err != nil {
			return err
		}
		if err := algorithmOK(req.GetAlgorithm()); err != nil {
			return err
		}
		if n := len(req.GetKeyMaterial()); n != store.DEKSize {
			return rpcstatus.Invalid("key_material: %d bytes, want %d for KEY_ALGORITHM_AES_256_GCM", n, store.DEKSize)
		}
		var (
			k   store.Key
			err error
		)
		if req.GetNewVersion() {
			e.Details = map[string]string{"new_version": "true"}
			if req.GetDescription() != "" || len(req.GetLabels()) > 0 {
				return rpcstatus.Invalid("description and labels: must be empty with new_version (they belong to the key, which exists)")
			}
			if err := s.versionRoom(ctx, req.GetKeyId()); err != nil {
				return err
			}
			k, err = s.cfg.Store.ImportVersion(ctx, req.GetKeyId(), req.GetKeyMaterial())
		} else {
			k, err = s.cfg.Store.ImportKey(ctx, req.GetKeyId(), req.GetKeyMaterial(), store.KeyOptions{Description: req.GetDescription(), Labels: req.GetLabels()})
		}
		if err != nil {
			return err
		}
		e.KeyVersion = k.Primary
		out = &kbsv1.ImportKeyResponse{Key: keyProto(k), Version: k.Primary}
		return nil
	})
	return out, err
}

// versionRoom refuses (FailedPrecondition) to add a version to a key that
// has the maximum number, which the keystore reports as an invalid
// argument.
func (s *Service) versionRoom(ctx context.Context, id string) error {
	k, err := s.cfg.Store.GetKey(ctx, id)
	if err != nil {
		return err
	}
	if len(k.Versions) >= store.MaxVersions {
		return rpcstatus.New(codes.FailedPrecondition, policy.ReasonTooManyVersions, fmt.Errorf("admin: key %q has %d versions, the maximum", id, len(k.Versions)))
	}
	return nil
}

// RotateKey adds a generated version and makes it primary.
func (s *Service) RotateKey(ctx context.Context, req *kbsv1.RotateKeyRequest) (*kbsv1.RotateKeyResponse, error) {
	var out *kbsv1.RotateKeyResponse
	err := s.call(ctx, "RotateKey", req.GetKeyId(), func(e *audit.Entry) error {
		if err := validKeyID(req.GetKeyId()); err != nil {
			return err
		}
		if err := s.versionRoom(ctx, req.GetKeyId()); err != nil {
			return err
		}
		k, err := s.cfg.Store.RotateKey(ctx, req.GetKeyId())
		if err != nil {
			return err
		}
		e.KeyVersion = k.Primary
		out = &kbsv1.RotateKeyResponse{Key: keyProto(k), NewVersion: k.Primary}
		return nil
	})
	return out, err
}

// GetKey returns a key's metadata.
func (s *Service) GetKey(ctx context.Context, req *kbsv1.GetKeyRequest) (*kbsv1.GetKeyResponse, error) {
	var out *kbsv1.GetKeyResponse
	err := s.call(ctx, "GetKey", req.GetKeyId(), func(e *audit.Entry) error {
		if err := validKeyID(req.GetKeyId()); err != nil {
			return err
		}
		k, err := s.cfg.Store.GetKey(ctx, req.GetKeyId())
		if err != nil {
			return err
		}
		out = &kbsv1.GetKeyResponse{Key: keyProto(k)}
		return nil
	})
	return out, err
}

// ListKeys returns one page of keys in id order.
func (s *Service) ListKeys(ctx context.Context, req *kbsv1.ListKeysRequest) (*kbsv1.ListKeysResponse, error) {
	var out *kbsv1.ListKeysResponse
	err := s.call(ctx, "ListKeys", "", func(e *audit.Entry) error {
		n, err := pageSize(req.GetPageSize())
		if err != nil {
			return err
		}
		after, err := decodeToken(req.GetPageToken(), "k")
		if err != nil {
			return err
		}
		if after != "" && store.ValidateKeyID(after) != nil {
			return rpcstatus.Invalid("page_token: not a token this server issued")
		}
		keys, err := s.cfg.Store.ListKeys(ctx, after, n)
		if err != nil {
			return err
		}
		out = &kbsv1.ListKeysResponse{}
		for _, k := range keys {
			out.Keys = append(out.Keys, keyProto(k))
		}
		if len(keys) == n {
			last := keys[len(keys)-1].ID
			more, err := s.cfg.Store.ListKeys(ctx, last, 1)
			if err != nil {
				return err
			}
			if len(more) > 0 {
				out.NextPageToken = encodeToken("k", last)
			}
		}
		return nil
	})
	return out, err
}

// target is the version-or-whole-key choice of Disable/Enable/DestroyKey.
func target(version uint32, whole bool) error {
	if (version == 0) == !whole {
		return rpcstatus.Invalid("version and whole_key: set exactly one (version 0 means unset here, not primary)")
	}
	return nil
}

// DisableKey disables one version or the whole key.
func (s *Service) DisableKey(ctx context.Context, req *kbsv1.DisableKeyRequest) (*kbsv1.DisableKeyResponse, error) {
	var out *kbsv1.DisableKeyResponse
	err := s.call(ctx, "DisableKey", req.GetKeyId(), func(e *audit.Entry) error {
		k, err := s.setState(ctx, e, req.GetKeyId(), req.GetVersion(), req.GetWholeKey(), s.cfg.Store.DisableKey, s.cfg.Store.DisableVersion)
		if err != nil {
			return err
		}
		out = &kbsv1.DisableKeyResponse{Key: keyProto(k)}
		return nil
	})
	return out, err
}

// EnableKey enables one version or the whole key.
func (s *Service) EnableKey(ctx context.Context, req *kbsv1.EnableKeyRequest) (*kbsv1.EnableKeyResponse, error) {
	var out *kbsv1.EnableKeyResponse
	err := s.call(ctx, "EnableKey", req.GetKeyId(), func(e *audit.Entry) error {
		k, err := s.setState(ctx, e, req.GetKeyId(), req.GetVersion(), req.GetWholeKey(), s.cfg.Store.EnableKey, s.cfg.Store.EnableVersion)
		if err != nil {
			return err
		}
		out = &kbsv1.EnableKeyResponse{Key: keyProto(k)}
		return nil
	})
	return out, err
}

func (s *Service) setState(ctx context.Context, e *audit.Entry, id string, version uint32, whole bool,
	onKey func(context.Context, string) (store.Key, error),
	onVersion func(context.Context, string, uint32) (store.Key, error),
) (store.Key, error) {
	if err := validKeyID(id); err != nil {
		return store.Key{}, err
	}
	if err := target(version, whole); err != nil {
		return store.Key{}, err
	}
	if whole {
		e.Details = map[string]string{"whole_key": "true"}
		return onKey(ctx, id)
	}
	e.KeyVersion = version
	return onVersion(ctx, id, version)
}

// DestroyKey erases one version or the whole key (crypto-shredding) and
// keeps the metadata as a tombstone. The primary version cannot be destroyed
// alone (FailedPrecondition, reason primary_version, with a message saying
// to rotate first, then destroy the version, or to destroy the whole key).
// Destroying what is already destroyed succeeds.
func (s *Service) DestroyKey(ctx context.Context, req *kbsv1.DestroyKeyRequest) (*kbsv1.DestroyKeyResponse, error) {
	var out *kbsv1.DestroyKeyResponse
	err := s.call(ctx, "DestroyKey", req.GetKeyId(), func(e *audit.Entry) error {
		k, err := s.setState(ctx, e, req.GetKeyId(), req.GetVersion(), req.GetWholeKey(), s.cfg.Store.DestroyKey, s.cfg.Store.DestroyVersion)
		if errors.Is(err, store.ErrPrimaryVersion) {
			v := req.GetVersion()
			return &rpcstatus.Error{
				Code: codes.FailedPrecondition, Reason: policy.ReasonPrimaryVersion, Err: err,
				Message: fmt.Sprintf("version %d is the primary version of key %q: rotate the key first (a new version becomes primary), then destroy version %d; or destroy the whole key", v, req.GetKeyId(), v),
			}
		}
		if err != nil {
			return err
		}
		out = &kbsv1.DestroyKeyResponse{Key: keyProto(k)}
		return nil
	})
	return out, err
}

// ExportKey seals a key version to the administrator's public key.
func (s *Service) ExportKey(ctx context.Context, req *kbsv1.ExportKeyRequest) (*kbsv1.ExportKeyResponse, error) {
	var out *kbsv1.ExportKeyResponse
	err := s.call(ctx, "ExportKey", req.GetKeyId(), func(e *audit.Entry) error {
		e.KeyVersion = req.GetKeyVersion()
		if err := validKeyID(req.GetKeyId()); err != nil {
			return err
		}
		kem := keyrelease.KEM(req.GetKemId())
		e.Details = map[string]string{"kem": kem.String()}
		if !kem.Supported() {
			return rpcstatus.Invalid("kem_id: %s is not supported; use HPKE_KEM_DHKEM_X25519_HKDF_SHA256 or HPKE_KEM_MLKEM768_X25519", req.GetKemId())
		}
		if err := keyrelease.CheckPublicKey(kem, req.GetPublicKey()); err != nil {
			return rpcstatus.Invalid("public_key: %v", err)
		}
		dek, version, err := s.cfg.Store.UnwrapKey(ctx, req.GetKeyId(), req.GetKeyVersion())
		if err != nil {
			return err
		}
		e.KeyVersion = version
		enc, ct, err := keyrelease.Seal(kem, req.GetPublicKey(), keyrelease.ExportInfo(req.GetKeyId(), version), dek)
		clear(dek)
		if err != nil {
			return rpcstatus.Invalid("public_key: %v", err)
		}
		out = &kbsv1.ExportKeyResponse{
			SealedKey: &kbsv1.SealedKey{
				KemId: req.GetKemId(), KdfId: kbsv1.HpkeKdf_HPKE_KDF_HKDF_SHA256, AeadId: kbsv1.HpkeAead_HPKE_AEAD_AES_256_GCM,
				Enc: enc, Ciphertext: ct,
			},
			KeyId:      req.GetKeyId(),
			KeyVersion: version,
			Algorithm:  kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM,
			RequestId:  rpcstatus.RequestID(ctx),
		}
		return nil
	})
	return out, err
}

func keyProto(k store.Key) *kbsv1.KeyMetadata {
	m := &kbsv1.KeyMetadata{
		KeyId:          k.ID,
		Algorithm:      kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM,
		State:          keyState(k.State),
		PrimaryVersion: k.Primary,
		Description:    k.Description,
		Labels:         k.Labels,
		PolicyVersion:  k.PolicyVersion,
		CreateTime:     timestamppb.New(k.Created),
		UpdateTime:     timestamppb.New(k.Updated),
	}
	if !k.Destroyed.IsZero() {
		m.DestroyTime = timestamppb.New(k.Destroyed)
	}
	for _, v := range k.Versions {
		m.Versions = append(m.Versions, &kbsv1.KeyVersion{
			Version:    v.Version,
			State:      versionState(v.State),
			Origin:     origin(v.Origin),
			CreateTime: timestamppb.New(v.Created),
			UpdateTime: timestamppb.New(v.Updated),
		})
	}
	return m
}

func keyState(s store.State) kbsv1.KeyState {
	switch s {
	case store.StateEnabled:
		return kbsv1.KeyState_KEY_STATE_ENABLED
	case store.StateDisabled:
		return kbsv1.KeyState_KEY_STATE_DISABLED
	case store.StateDestroyed:
		return kbsv1.KeyState_KEY_STATE_DESTROYED
	}
	return kbsv1.KeyState_KEY_STATE_UNSPECIFIED
}

func versionState(s store.State) kbsv1.KeyVersionState {
	switch s {
	case store.StateEnabled:
		return kbsv1.KeyVersionState_KEY_VERSION_STATE_ENABLED
	case store.StateDisabled:
		return kbsv1.KeyVersionState_KEY_VERSION_STATE_DISABLED
	case store.StateDestroyed:
		return kbsv1.KeyVersionState_KEY_VERSION_STATE_DESTROYED
	}
	return kbsv1.KeyVersionState_KEY_VERSION_STATE_UNSPECIFIED
}

func origin(o store.Origin) kbsv1.KeyOrigin {
	switch o {
	case store.OriginGenerated:
		return kbsv1.KeyOrigin_KEY_ORIGIN_GENERATED
	case store.OriginImported:
		return kbsv1.KeyOrigin_KEY_ORIGIN_IMPORTED
	}
	return kbsv1.KeyOrigin_KEY_ORIGIN_UNSPECIFIED
}
