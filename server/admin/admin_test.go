package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"testing"
	"time"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store/storetest"
	"github.com/cml-project/cml/tdx/verifier"
)

type noVerifier struct{}

func (noVerifier) Verify(context.Context, []byte) (*verifier.Claims, error) {
	return nil, errors.New("not reached")
}

// TestHandlersNeedGrant: without the authorization interceptor's grant
// nothing runs and nothing changes.
func TestHandlersNeedGrant(t *testing.T) {
	st := storetest.Open(t)
	s, err := New(Config{Store: st, Verifier: noVerifier{}, Now: time.Now, Rand: rand.Reader, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = s.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "k"})
	if rpcstatus.ReasonOf(err) != "not_authorized" {
		t.Errorf("CreateKey without grant: %v", err)
	}
	if _, err := st.GetKey(ctx, "k"); err == nil {
		t.Error("the key was created")
	}
	_, err = s.ListAuditRecords(ctx, &kbsv1.ListAuditRecordsRequest{})
	if rpcstatus.ReasonOf(err) != "not_authorized" {
		t.Errorf("ListAuditRecords without grant: %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New accepted an empty config")
	}
}

func TestPageTokens(t *testing.T) {
	tok := encodeToken("p/k", "5")
	if pos, err := decodeToken(tok, "p/k"); err != nil || pos != "5" {
		t.Errorf("round trip = %q, %v", pos, err)
	}
	for _, bad := range []string{"***", encodeToken("p/other", "5"), encodeToken("p/k", "")} {
		if _, err := decodeToken(bad, "p/k"); rpcstatus.ReasonOf(err) != "invalid_argument" {
			t.Errorf("decodeToken(%q) = %v", bad, err)
		}
	}
	for n, want := range map[int32]int{0: DefaultPageSize, 5: 5, 5000: MaxPageSize} {
		if got, err := pageSize(n); err != nil || got != want {
			t.Errorf("pageSize(%d) = %d, %v", n, got, err)
		}
	}
}

// FuzzDecodeToken: any token string is refused or yields a position of
// the listing it was asked for, never a panic.
func FuzzDecodeToken(f *testing.F) {
	f.Add(encodeToken("k", "model-a"))
	f.Add(encodeToken("a", "17"))
	f.Add("")
	f.Add("%%%")
	f.Fuzz(func(t *testing.T, tok string) {
		pos, err := decodeToken(tok, "k")
		if err == nil && tok != "" && (pos == "" || encodeToken("k", pos) != tok) {
			t.Fatalf("decodeToken(%q) = %q", tok, pos)
		}
	})
}
