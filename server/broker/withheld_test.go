package broker

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/authz"
	"github.com/cml-project/cml/server/policy"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/server/store/storetest"
	"github.com/cml-project/cml/tdx/verifier"
)

// fixedVerifier returns its claims for any quote.
type fixedVerifier struct{ claims *verifier.Claims }

func (f *fixedVerifier) Verify(context.Context, []byte) (*verifier.Claims, error) {
	c := *f.claims
	return &c, nil
}

// failingAudit is a keystore whose audit log refuses appends.
type failingAudit struct{ *store.Store }

func (failingAudit) AppendAudit(context.Context, audit.Entry) (audit.Record, error) {
	return audit.Record{}, errors.New("disk full")
}

// TestReleaseWithheldWithoutAudit: an allowed release whose audit record
// cannot be written returns no key.
func TestReleaseWithheldWithoutAudit(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	if _, err := st.CreateKey(ctx, "k", store.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	b, _ := policy.Marshal(&kbsv1.Policy{SpiffeIds: []string{"spiffe://example.org/*"}, AllowUnpinnedMeasurements: true})
	if _, err := st.PutPolicy(ctx, "k", b); err != nil {
		t.Fatal(err)
	}
	fv := &fixedVerifier{claims: &verifier.Claims{TCBStatus: verifier.TCBStatusUpToDate}}
	caller := spiffeid.RequireFromString("spiffe://example.org/loader")
	gctx := authz.WithGrant(rpcstatus.WithRequestID(ctx, "0123456789abcdef"), authz.Grant{Caller: caller, Role: authz.Loader})

	for _, tc := range []struct {
		name  string
		store Store
		ok    bool
	}{{"audited", st, true}, {"audit fails", failingAudit{st}, false}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Config{Store: tc.store, Verifier: fv, Now: func() time.Time { return t0 }, Rand: rand.Reader, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			ch, err := s.GetChallenge(gctx, &kbsv1.GetChallengeRequest{KeyId: "k"})
			if err != nil {
				t.Fatal(err)
			}
			priv, pub, _ := keyrelease.GenerateKey(keyrelease.KEMX25519)
			fv.claims.ReportData = keyrelease.ReportData(ch.Nonce, keyrelease.KEMX25519, pub)
			resp, err := s.ReleaseKey(gctx, &kbsv1.ReleaseKeyRequest{KeyId: "k", Nonce: ch.Nonce, Quote: []byte("q"),
				KemId: kbsv1.HpkeKem_HPKE_KEM_DHKEM_X25519_HKDF_SHA256, TeePublicKey: pub})
			if !tc.ok {
				if resp != nil || rpcstatus.ReasonOf(err) != "internal" {
					t.Fatalf("unaudited release: %v, %v", resp, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sk := resp.SealedKey
			if _, err := keyrelease.Open(priv, keyrelease.ReleaseInfo("k", 1, ch.Nonce), sk.Enc, sk.Ciphertext); err != nil {
				t.Fatal(err)
			}
		})
	}
}
