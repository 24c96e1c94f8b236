package spire_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cml-project/cml/test/spire"
)

// noIdentity is what the SPIRE agent answers a workload that no
// registration entry matches (gRPC PermissionDenied).
const noIdentity = "no identity issued"

type whoamiOutput struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

func whoami(t *testing.T, bin, socket string, timeout time.Duration) (whoamiOutput, result) {
	t.Helper()
	r := run(t, timeout+10*time.Second, bin, "-socket", socket, "-timeout", timeout.String())
	var out whoamiOutput
	if r.code == 0 {
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("whoami output %q: %v", r.stdout, err)
		}
	}
	return out, r
}

// TestWorkloadAPI checks the harness and SPIRE itself: a process at a
// registered path gets its SPIFFE ID from the agent, the same program at
// another path gets nothing, and deleting the entry takes the identity
// away from new processes within seconds.
func TestWorkloadAPI(t *testing.T) {
	t.Parallel()
	cfg := spireConfig(t)
	bins := binaries(t)
	s := spire.Start(t, cfg)
	registered := filepath.Join(bins, "whoami")
	unregistered := copyBinary(t, registered, filepath.Join(s.Dir, "whoami-unregistered"))
	entryID := s.CreateEntry(t, spire.Entry{ID: s.ID("whoami"), Path: registered, X509SVIDTTL: 90 * time.Second})
	s.StartAgent(t)

	got, r := whoami(t, registered, s.WorkloadAPI(), 20*time.Second)
	if r.code != 0 {
		t.Fatalf("registered workload: %v", r)
	}
	if got.SPIFFEID != s.ID("whoami").String() {
		t.Errorf("registered workload got %s, want %s", got.SPIFFEID, s.ID("whoami"))
	}
	// SPIRE backdates NotBefore a little; the TTL is NotAfter minus issuance.
	if lifetime := got.NotAfter.Sub(got.NotBefore); lifetime < 90*time.Second || lifetime > 2*time.Minute {
		t.Errorf("SVID lifetime %v, want the entry's 90s (plus SPIRE's backdating)", lifetime)
	}

	start := time.Now()
	if _, r := whoami(t, unregistered, s.WorkloadAPI(), 3*time.Second); r.code != 1 || !strings.Contains(r.stderr, noIdentity) {
		t.Errorf("unregistered workload: want exit 1 and the agent's %q, got %v", noIdentity, r)
	}
	t.Logf("unregistered workload refused after %v", time.Since(start).Round(time.Millisecond))

	s.DeleteEntry(t, entryID)
	took := eventually(t, 30*time.Second, 500*time.Millisecond, "agent drops the deleted entry", func() error {
		got, r := whoami(t, registered, s.WorkloadAPI(), 2*time.Second)
		switch {
		case r.code == 0:
			return fmt.Errorf("still gets %s", got.SPIFFEID)
		case !strings.Contains(r.stderr, noIdentity):
			t.Fatalf("want the agent's %q, got %v", noIdentity, r)
		}
		return nil
	})
	t.Logf("deleted entry: new processes have no SVID after %v", took.Round(time.Millisecond))
}
