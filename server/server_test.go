package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cml-project/cml/server"
	"github.com/cml-project/cml/server/store/storetest"
)

func TestNewConfig(t *testing.T) {
	st := storetest.Open(t)
	v := noVerifier{}
	if _, err := server.New(server.Config{Store: st, Verifier: v, Now: time.Now}); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	for name, cfg := range map[string]server.Config{
		"no store":           {Verifier: v, Now: time.Now},
		"no verifier":        {Store: st, Now: time.Now},
		"no clock":           {Store: st, Verifier: v},
		"negative ttl":       {Store: st, Verifier: v, Now: time.Now, ChallengeTTL: -1},
		"negative size":      {Store: st, Verifier: v, Now: time.Now, MaxRequestBytes: -1},
		"per > total":        {Store: st, Verifier: v, Now: time.Now, MaxChallengesPerCaller: 10, MaxChallenges: 5},
		"trust domain admin": {Store: st, Verifier: v, Now: time.Now, AdminIDs: []string{"spiffe://example.org"}},
		"bad auditor id":     {Store: st, Verifier: v, Now: time.Now, AuditorIDs: []string{"admin"}},
		"star in the middle": {Store: st, Verifier: v, Now: time.Now, AdminIDs: []string{"spiffe://example.org/*/x"}},
	} {
		if _, err := server.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestNothingExempt: a service the table does not list — here the standard
// health service, registered on the mTLS server by mistake — is denied, to
// admins too.
func TestNothingExempt(t *testing.T) {
	e := newEnv(t, envOptions{register: func(g *grpc.Server) {
		healthpb.RegisterHealthServer(g, health.NewServer())
	}})
	_, err := healthpb.NewHealthClient(e.conn(adminID)).Check(context.Background(), &healthpb.HealthCheckRequest{})
	d := wantDenied(t, err, codes.PermissionDenied, "not_authorized")
	if rec := e.recordFor(d.RequestId); rec.Operation != "Check" || rec.Caller != adminID.String() {
		t.Errorf("audit record = %+v", rec)
	}
}
