package server_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/rpcstatus"
)

// TestAdminDestroyVersion: DestroyKey with a version crypto-shreds that
// version only, over real mTLS gRPC: export and release of it fail with
// key_destroyed, the other versions keep working, the primary is refused
// with a message that says what to do, and every call is audited.
func TestAdminDestroyVersion(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	a := e.admin()
	e.createKey("m", e.defaultPolicy())
	if _, err := a.RotateKey(ctx, &kbsv1.RotateKeyRequest{KeyId: "m"}); err != nil {
		t.Fatal(err)
	}
	dek1, dek2 := e.dek("m", 1), e.dek("m", 2)

	// The primary (version 2) is refused, and nothing changes.
	_, err := a.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "m", Version: 2})
	d := wantDenied(t, err, codes.FailedPrecondition, "primary_version")
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "primary") || !strings.Contains(msg, "rotate") || !strings.Contains(msg, "then destroy version 2") {
		t.Errorf("refusal message %q does not say the version is primary and to rotate first", msg)
	}
	if rec := e.recordFor(d.GetRequestId()); rec.Operation != "DestroyKey" || rec.Decision != audit.Deny ||
		rec.KeyVersion != 2 || len(rec.Reasons) != 1 || rec.Reasons[0] != "primary_version" {
		t.Errorf("refusal audit record = %+v", rec)
	}
	if got := e.dek("m", 2); !bytes.Equal(got, dek2) {
		t.Fatal("primary changed by a refused destroy")
	}
	_, err = a.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "m", Version: 7})
	wantDenied(t, err, codes.NotFound, "key_version_not_found")
	_, err = a.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "nope", Version: 1})
	wantDenied(t, err, codes.NotFound, "key_not_found")

	// Version 1 goes.
	var hdr metadata.MD
	ds, err := a.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "m", Version: 1}, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	k := ds.GetKey()
	if k.State != kbsv1.KeyState_KEY_STATE_ENABLED || k.PrimaryVersion != 2 || k.DestroyTime != nil ||
		k.Versions[0].State != kbsv1.KeyVersionState_KEY_VERSION_STATE_DESTROYED ||
		k.Versions[1].State != kbsv1.KeyVersionState_KEY_VERSION_STATE_ENABLED {
		t.Fatalf("after destroying version 1: %v", k)
	}
	ids := hdr.Get(rpcstatus.RequestIDHeader)
	if len(ids) != 1 {
		t.Fatalf("request id header = %v", ids)
	}
	if rec := e.recordFor(ids[0]); rec.Operation != "DestroyKey" || rec.Decision != audit.Allow ||
		rec.KeyID != "m" || rec.KeyVersion != 1 || rec.Caller != adminID.String() || rec.Details["whole_key"] != "" {
		t.Errorf("destroy audit record = %+v", rec)
	}
	// Idempotent.
	again, err := a.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "m", Version: 1})
	if err != nil || again.GetKey().Versions[0].State != kbsv1.KeyVersionState_KEY_VERSION_STATE_DESTROYED {
		t.Fatalf("second destroy = %v, %v", again, err)
	}
	// A destroyed version cannot be re-enabled.
	_, err = a.EnableKey(ctx, &kbsv1.EnableKeyRequest{KeyId: "m", Version: 1})
	wantDenied(t, err, codes.FailedPrecondition, "key_destroyed")

	// Export and release of version 1 fail; version 2 still works both ways.
	_, pub, _ := keyrelease.GenerateKey(keyrelease.KEMX25519)
	_, err = a.ExportKey(ctx, &kbsv1.ExportKeyRequest{KeyId: "m", KeyVersion: 1, KemId: x25519, PublicKey: pub})
	wantDenied(t, err, codes.FailedPrecondition, "key_destroyed")
	if ex, err := a.ExportKey(ctx, &kbsv1.ExportKeyRequest{KeyId: "m", KeyVersion: 2, KemId: x25519, PublicKey: pub}); err != nil || ex.KeyVersion != 2 {
		t.Fatalf("export version 2 = %v, %v", ex, err)
	}
	kb := e.broker(loaderID)
	_, err = e.release(kb, attempt{keyID: "m", version: 1})
	wantDenied(t, err, codes.PermissionDenied, "key_destroyed")
	r, err := e.release(kb, attempt{keyID: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if got := open(t, r); !bytes.Equal(got, dek2) || r.resp.GetKeyVersion() != 2 {
		t.Fatalf("release of the primary after destroying version 1: version %d", r.resp.GetKeyVersion())
	}
	if _, _, err := e.st.UnwrapKey(ctx, "m", 1); err == nil {
		t.Fatal("the keystore still unwraps version 1")
	}
	if err := e.st.Check(ctx); err != nil {
		t.Fatalf("keystore check: %v", err)
	}
	e.checkNoSecrets(dek1, dek2)
}
