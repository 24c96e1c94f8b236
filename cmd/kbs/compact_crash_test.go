package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/kek"
	"github.com/cml-project/cml/server/store"
)

// compactSnapshot is what a keystore must still hold after any crash of
// kbs compact: the DEK bytes of every live version, the versions and keys
// that were destroyed, the metadata of every key, and the audit chain.
type compactSnapshot struct {
	live      map[string]map[uint32][]byte // key id → version → DEK
	destroyed map[string][]uint32          // key id → destroyed versions (all of a destroyed key)
	keys      []byte                       // JSON of ListKeys, every page
	audit     audit.Report
}

// TestCompactKill runs the real kbs compact and SIGKILLs it at moments
// spread over its run (from before it starts to after it ended). After each
// kill the database at PATH must open (Open runs the integrity check) and
// hold exactly what it held before: every live key unwraps to the same
// bytes, destroyed versions stay destroyed, the audit chain verifies with
// the same head. A following compaction that is not killed must succeed
// and remove a leftover PATH.compacting.
//
// SIGKILL loses no page-cache data, so this tests the order of file
// operations (never a partial or zeroed file at PATH), not whether each
// fsync is in place: a power cut would be needed for that.
func TestCompactKill(t *testing.T) {
	if testing.Short() {
		t.Skip("kills the kbs compact process; skipped under -short")
	}
	const rounds = 24
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))

	dir, provider := initDataDir(t)
	path := store.DBPath(dir)
	tmp := path + store.CompactTempSuffix
	want := fillForCompact(t, dir, provider)
	t.Logf("keystore: %d keys with live versions, %d with destroyed ones, %d audit records", len(want.live), len(want.destroyed), want.audit.Records)

	// One compaction that is not killed: how long a run takes, and when it
	// starts writing (also warms the page cache and builds the binary
	// outside the measurement).
	kbsBinary(t)
	full := runCompactChild(t, dir, -1, true)
	if full.code != 0 {
		t.Fatalf("uninterrupted kbs compact: exit %d:\n%s", full.code, full.output)
	}
	checkCompacted(t, "after the uninterrupted run", path, provider, want)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("an uninterrupted kbs compact of %d bytes took %v, writing from %v", fi.Size(), full.elapsed, full.firstWrite)
	// Before it creates PATH.compacting the process only reads; spread the
	// kills over the rest of the run, where the windows of a wrong order of
	// steps are (a few ms each).
	lo, hi := full.firstWrite*8/10, full.elapsed*11/10

	var tmpLeft, replaced, finished int
	for round := range rounds {
		// Round 0 kills at once, the last long after the run ended; the
		// others at a random moment of their own stratum of [lo, hi).
		var delay time.Duration
		switch round {
		case 0:
		case rounds - 1:
			delay = 3 * full.elapsed
		default:
			span := float64(hi-lo) / (rounds - 2)
			delay = lo + time.Duration(span*(float64(round-1)+rng.Float64()))
		}
		before, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		r := runCompactChild(t, dir, delay, false)
		if r.code == 0 {
			finished++
		}
		after, err := os.Stat(path)
		if err != nil {
			t.Fatalf("round %d (kill after %v): database gone: %v\nkbs output:\n%s", round, delay, err, r.output)
		}
		if !os.SameFile(before, after) {
			replaced++
		}
		_, err = os.Lstat(tmp)
		hadTmp := err == nil
		if hadTmp {
			tmpLeft++
		}
		checkCompacted(t, fmt.Sprintf("round %d (kill after %v, exit %d)", round, delay, r.code), path, provider, want)

		// The next run, not killed, succeeds and cleans up.
		c := runCompactChild(t, dir, -1, false)
		if c.code != 0 {
			t.Fatalf("round %d: kbs compact after the kill: exit %d:\n%s", round, c.code, c.output)
		}
		if removed := strings.Contains(c.output, "Removed "+tmp); removed != hadTmp {
			t.Errorf("round %d: %s was left: %v; the next run reported removing it: %v\n%s", round, tmp, hadTmp, removed, c.output)
		}
		if _, err := os.Lstat(tmp); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("round %d: %s still there after a successful compaction: %v", round, tmp, err)
		}
		if round == rounds-1 {
			// Earlier rounds' are checked after the next kill.
			checkCompacted(t, "after the last run", path, provider, want)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	// Which phases the kills hit depends on timing; say so for the log.
	t.Logf("%d kills: %d left %s, %d after the rename, %d after the run had finished", rounds, tmpLeft, store.CompactTempSuffix, replaced, finished)
}

type childRun struct {
	code    int // exit code, -1 when killed
	output  string
	elapsed time.Duration
	// firstWrite is when PATH.compacting was first seen, if watched.
	firstWrite time.Duration
}

// runCompactChild runs kbs compact --data-dir dir as a child process and,
// unless delay < 0, SIGKILLs it delay after starting it. With watch it
// polls for PATH.compacting until the process exits.
func runCompactChild(t *testing.T, dir string, delay time.Duration, watch bool) childRun {
	t.Helper()
	var out bytes.Buffer // stdout and stderr; written by exec's copiers until Wait returns
	cmd := exec.Command(kbsBinary(t), "compact", "--data-dir", dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var firstWrite time.Duration
	for watch {
		if _, err := os.Lstat(store.DBPath(dir) + store.CompactTempSuffix); err == nil {
			firstWrite = time.Since(start)
			break
		}
		select {
		case <-done:
			watch = false
		case <-time.After(100 * time.Microsecond):
		}
	}
	if delay >= 0 {
		select {
		case <-done:
		case <-time.After(delay):
			// os.ErrProcessDone if it exited meanwhile: fine.
			if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("kbs compact did not exit within 60s:\n%s", out.String())
	}
	return childRun{code: cmd.ProcessState.ExitCode(), output: out.String(), elapsed: time.Since(start), firstWrite: firstWrite}
}

// fillForCompact writes a few hundred keys (some rotated, some destroyed,
// some with a destroyed version) and audit records through the store API,
// concurrently so bbolt groups the commits, and returns what they hold.
func fillForCompact(t *testing.T, dir string, p kek.Provider) compactSnapshot {
	t.Helper()
	const (
		nKeys    = 300
		nAudit   = 1500
		nWorkers = 16
	)
	ctx := context.Background()
	st := openStore(t, dir, p)
	defer st.Close()
	detail := strings.Repeat("filler text, ", 16)
	var wg sync.WaitGroup
	errc := make(chan error, nWorkers)
	for w := range nWorkers {
		wg.Go(func() {
			err := func() error {
				for i := w; i < nKeys; i += nWorkers {
					id := fmt.Sprintf("k%04d", i)
					if _, err := st.CreateKey(ctx, id, store.KeyOptions{}); err != nil {
						return err
					}
					for range i % 3 { // 1, 2 or 3 versions
						if _, err := st.RotateKey(ctx, id); err != nil {
							return err
						}
					}
					switch {
					case i%7 == 0:
						if _, err := st.DestroyKey(ctx, id); err != nil {
							return err
						}
					case i%3 == 2 && i%2 == 0:
						if _, err := st.DestroyVersion(ctx, id, 2); err != nil {
							return err
						}
					}
				}
				for i := w; i < nAudit; i += nWorkers {
					e := audit.Entry{
						RequestID: fmt.Sprintf("req-%d", i), Operation: "test.Compact", KeyID: fmt.Sprintf("k%04d", i%nKeys),
						Decision: audit.Allow, Details: map[string]string{"filler": detail},
					}
					if _, err := st.AppendAudit(ctx, e); err != nil {
						return err
					}
				}
				return nil
			}()
			if err != nil {
				errc <- err
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	s := snapshotStore(t, st)
	if len(s.live) == 0 || len(s.destroyed) == 0 {
		t.Fatalf("setup: %d live and %d destroyed keys", len(s.live), len(s.destroyed))
	}
	return s
}

// snapshotStore reads every key's metadata, live DEKs and destroyed
// versions, and verifies the audit chain.
func snapshotStore(t *testing.T, st *store.Store) compactSnapshot {
	t.Helper()
	ctx := context.Background()
	s := compactSnapshot{live: map[string]map[uint32][]byte{}, destroyed: map[string][]uint32{}}
	all := listAllKeys(t, st)
	var err error
	if s.keys, err = json.Marshal(all); err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		for _, v := range k.Versions {
			if k.State == store.StateDestroyed || v.State == store.StateDestroyed {
				s.destroyed[k.ID] = append(s.destroyed[k.ID], v.Version)
				continue
			}
			dek, _, err := st.UnwrapKey(ctx, k.ID, v.Version)
			if err != nil {
				t.Fatalf("unwrap %s v%d: %v", k.ID, v.Version, err)
			}
			if s.live[k.ID] == nil {
				s.live[k.ID] = map[uint32][]byte{}
			}
			s.live[k.ID][v.Version] = dek
		}
	}
	if s.audit, err = st.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func listAllKeys(t *testing.T, st *store.Store) []store.Key {
	t.Helper()
	var all []store.Key
	for after := ""; ; {
		page, err := st.ListKeys(context.Background(), after, store.MaxListLimit)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if len(page) < store.MaxListLimit {
			return all
		}
		after = page[len(page)-1].ID
	}
}

// checkCompacted opens the database at path (no process holds it now) and
// compares it with want.
func checkCompacted(t *testing.T, when, path string, p kek.Provider, want compactSnapshot) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, path, store.Options{KEK: p, Now: time.Now})
	if err != nil {
		t.Fatalf("%s: the database does not open: %v", when, err)
	}
	defer st.Close()
	for id, versions := range want.live {
		for v, dek := range versions {
			got, _, err := st.UnwrapKey(ctx, id, v)
			if err != nil || !bytes.Equal(got, dek) {
				t.Fatalf("%s: key %s v%d does not unwrap to its bytes: %v", when, id, v, err)
			}
		}
	}
	for id, versions := range want.destroyed {
		for _, v := range versions {
			if _, _, err := st.UnwrapKey(ctx, id, v); !errors.Is(err, store.ErrKeyDestroyed) {
				t.Fatalf("%s: destroyed key %s v%d: got %v, want ErrKeyDestroyed", when, id, v, err)
			}
		}
	}
	rep, err := st.VerifyAudit(ctx)
	if err != nil {
		t.Fatalf("%s: audit chain: %v", when, err)
	}
	// Compaction appends nothing today; should it ever audit itself, the
	// chain may grow but must keep the old head.
	if rep.Records < want.audit.Records {
		t.Fatalf("%s: audit chain has %d records, had %d", when, rep.Records, want.audit.Records)
	}
	recs, err := st.ListAudit(ctx, audit.Filter{AfterSeq: want.audit.Head.Seq - 1, Limit: 1})
	if err != nil || len(recs) != 1 || recs[0].Head() != want.audit.Head {
		t.Fatalf("%s: audit record %d is not the old head: %v", when, want.audit.Head.Seq, err)
	}
	// The metadata of every key, which also says which versions exist.
	keys, err := json.Marshal(listAllKeys(t, st))
	if err != nil || !bytes.Equal(keys, want.keys) {
		t.Fatalf("%s: key metadata changed: %v", when, err)
	}
}
