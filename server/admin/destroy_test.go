package admin

import (
	"context"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/authz"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/server/store/storetest"
)

// TestDestroyPrimaryVersion: destroying the primary version alone is
// FailedPrecondition with the stable reason primary_version, a message
// that names the version and says to rotate first, an audited denial, and
// no change; after a rotation the same version can be destroyed.
func TestDestroyPrimaryVersion(t *testing.T) {
	st := storetest.Open(t)
	s, err := New(Config{Store: st, Verifier: noVerifier{}, Now: time.Now, Rand: rand.Reader, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := authz.WithGrant(context.Background(), authz.Grant{Caller: spiffeid.RequireFromString("spiffe://example.org/admin"), Role: authz.Admin})
	if _, err := s.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "k"}); err != nil {
		t.Fatal(err)
	}

	_, err = s.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "k", Version: 1})
	e := rpcstatus.Classify(err)
	if e == nil || e.Code != codes.FailedPrecondition || e.Reason != "primary_version" {
		t.Fatalf("destroy of the primary version: %v, want FailedPrecondition primary_version", err)
	}
	st1 := rpcstatus.Status(err, "r")
	for _, want := range []string{`version 1 is the primary version of key "k"`, "rotate the key first", "then destroy version 1", "or destroy the whole key"} {
		if !strings.Contains(st1.Message(), want) {
			t.Errorf("status message %q lacks %q", st1.Message(), want)
		}
	}
	if d := rpcstatus.DetailOf(st1.Err()); d.GetReasonCode() != "primary_version" {
		t.Errorf("ErrorDetail reason = %q", d.GetReasonCode())
	}
	recs, err := st.ListAudit(ctx, audit.Filter{KeyID: "k", Decision: audit.Deny})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Operation != "DestroyKey" || recs[0].KeyVersion != 1 || len(recs[0].Reasons) != 1 || recs[0].Reasons[0] != "primary_version" {
		t.Errorf("audit records of the refusal: %+v", recs)
	}
	k, err := st.GetKey(ctx, "k")
	if err != nil || k.Primary != 1 || k.Versions[0].State != store.StateEnabled {
		t.Fatalf("after the refusal: %+v, %v", k, err)
	}

	// Rotate first, then destroy version 1: what the message says works.
	if _, err := s.RotateKey(ctx, &kbsv1.RotateKeyRequest{KeyId: "k"}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.DestroyKey(ctx, &kbsv1.DestroyKeyRequest{KeyId: "k", Version: 1})
	if err != nil || resp.GetKey().GetPrimaryVersion() != 2 {
		t.Fatalf("destroy of version 1 after rotating: %v, %v", resp, err)
	}
}
