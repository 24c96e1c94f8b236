package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/kek"
	"github.com/cml-project/cml/server/store"
)

// acked records every admin write whose response the client received.
type acked struct {
	mu       sync.Mutex
	keys     []string          // created keys, in order
	versions map[string]uint32 // highest acknowledged key version
	policies map[string]uint32 // highest acknowledged policy version
	writes   int
}

func (a *acked) created(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.keys = append(a.keys, id)
	a.versions[id] = max(a.versions[id], 1)
	a.writes++
}

func (a *acked) rotated(id string, v uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.versions[id] = max(a.versions[id], v)
	a.writes++
}

func (a *acked) policy(id string, v uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.policies[id] = max(a.policies[id], v)
	a.writes++
}

func (a *acked) pick(r *rand.Rand) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.keys) == 0 {
		return "", false
	}
	return a.keys[r.IntN(len(a.keys))], true
}

// TestKillDurability is the crash test of the real binary: several clients
// stream admin writes over mTLS while kbs is SIGKILLed at random moments,
// then restarted on the same data directory. Every write whose response was
// received must survive, the database must open and the audit chain must
// verify.
func TestKillDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the kbs process; skipped under -short")
	}
	const (
		rounds  = 12
		workers = 4
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	f := newFixture(t)
	args := f.serveArgs("--metrics-listen", "")
	a := &acked{versions: map[string]uint32{}, policies: map[string]uint32{}}
	pol := f.testPolicy()

	for round := range rounds {
		p := start(t, nil, args...)
		addr := p.addr(t, "grpc")
		var killed atomic.Bool
		var wg sync.WaitGroup
		for w := range workers {
			conn := f.dial(t, addr, "admin")
			admin := kbsv1.NewAdminServiceClient(conn)
			wr := rand.New(rand.NewPCG(seed, uint64(round*workers+w+2)))
			wg.Go(func() {
				defer conn.Close()
				for n := 0; ; n++ {
					err := oneWrite(admin, wr, a, pol, fmt.Sprintf("r%02d-w%d-%04d", round, w, n))
					if err == nil {
						continue
					}
					if !killed.Load() {
						t.Errorf("round %d: write failed before the kill: %v", round, err)
					}
					return
				}
			})
		}
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		killed.Store(true)
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		wg.Wait()
		if t.Failed() {
			t.Fatalf("round %d failed; kbs output:\n%s", round, p.output())
		}
	}
	t.Logf("%d acknowledged writes: %d keys, over %d SIGKILLs", a.writes, len(a.keys), rounds)
	if len(a.keys) == 0 {
		t.Fatal("no write was acknowledged: the test proves nothing")
	}

	// Restart and check every acknowledged write over gRPC.
	p := start(t, nil, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := kbsv1.NewAdminServiceClient(f.dial(t, p.addr(t, "grpc"), "admin"))
	for _, id := range a.keys {
		resp, err := admin.GetKey(ctx, &kbsv1.GetKeyRequest{KeyId: id})
		if err != nil {
			t.Errorf("acknowledged key %s lost: %v", id, err)
			continue
		}
		if got := uint32(len(resp.Key.GetVersions())); got < a.versions[id] {
			t.Errorf("key %s has %d versions, %d were acknowledged", id, got, a.versions[id])
		}
		if v := a.policies[id]; v > 0 {
			if _, err := admin.GetPolicy(ctx, &kbsv1.GetPolicyRequest{KeyId: id, Version: v}); err != nil {
				t.Errorf("acknowledged policy %s v%d lost: %v", id, v, err)
			}
		}
	}
	vr, err := admin.VerifyAuditLog(ctx, &kbsv1.VerifyAuditLogRequest{})
	if err != nil || !vr.GetOk() {
		t.Errorf("audit log does not verify: %v %v", vr, err)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, p.output())
	}

	// And directly on the file: it opens (Open runs the integrity check),
	// the chain verifies, and every acknowledged creation is audited.
	provider, err := kek.LoadFile(store.KEKPath(f.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.DBPath(f.dataDir), store.Options{KEK: provider, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
	audited := map[string]bool{}
	for after := uint64(0); ; {
		recs, err := st.ListAudit(ctx, audit.Filter{AfterSeq: after, Limit: store.MaxListLimit})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if strings.HasSuffix(r.Operation, "CreateKey") && r.Decision == audit.Allow {
				audited[r.KeyID] = true
			}
		}
		if len(recs) < store.MaxListLimit {
			break
		}
		after = recs[len(recs)-1].Seq
	}
	for _, id := range a.keys {
		if !audited[id] {
			t.Errorf("acknowledged CreateKey %s has no audit record", id)
		}
	}
}

// oneWrite does one random admin write and records it if acknowledged.
// A refusal that is the write's own fault (a key at its version limit) is
// not an error; anything else ends the worker.
func oneWrite(admin kbsv1.AdminServiceClient, r *rand.Rand, a *acked, pol *kbsv1.Policy, newID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, ok := a.pick(r)
	op := r.IntN(3)
	if !ok {
		op = 0
	}
	switch op {
	case 0:
		if _, err := admin.CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: newID}); err != nil {
			return err
		}
		a.created(newID)
	case 1:
		resp, err := admin.RotateKey(ctx, &kbsv1.RotateKeyRequest{KeyId: id})
		if status.Code(err) == codes.FailedPrecondition {
			return nil
		}
		if err != nil {
			return err
		}
		a.rotated(id, resp.NewVersion)
	case 2:
		resp, err := admin.PutPolicy(ctx, &kbsv1.PutPolicyRequest{KeyId: id, Policy: pol})
		if err != nil {
			return err
		}
		a.policy(id, resp.Policy.GetVersion())
	}
	return nil
}
