package store

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/kek"
)

// Environment of the crash child process (TestCrashChild).
const (
	crashDirEnv   = "CML_STORE_CRASH_DIR"
	crashRoundEnv = "CML_STORE_CRASH_ROUND"
)

// TestCrashChild is not a test on its own: TestCrashDurability runs the test
// binary again with crashDirEnv set, and this function then writes keys and
// audit records from several goroutines, printing one "ack" line per write
// after it returned, until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestCrashDurability")
	}
	round := os.Getenv(crashRoundEnv)
	p, err := kek.LoadFile(KEKPath(dir))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s, err := Open(ctx, DBPath(dir), Options{KEK: p, Now: time.Now})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	ack := func(format string, args ...any) {
		line := fmt.Sprintf(format+"\n", args...)
		mu.Lock()
		defer mu.Unlock()
		os.Stdout.WriteString(line) // one write(2) per line, atomic on a pipe
	}
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for i := 0; i < 100000; i++ {
				id := fmt.Sprintf("r%s-g%d-%d", round, g, i)
				switch i % 3 {
				case 0:
					if _, err := s.CreateKey(ctx, id, KeyOptions{}); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(3)
					}
					ack("key %s", id)
				case 1:
					r, err := s.AppendAudit(ctx, entry(id))
					if err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(3)
					}
					ack("audit %s %d", id, r.Seq)
				case 2:
					pol, err := s.PutPolicy(ctx, fmt.Sprintf("r%s-g%d-%d", round, g, i-2), []byte(id))
					if err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(3)
					}
					ack("policy %s %d", pol.KeyID, pol.Version)
				}
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

// TestCrashDurability kills (SIGKILL) a child process that is writing
// concurrently, at random moments, 12 times; after each kill the database
// must open and verify, and every write the child acknowledged must be
// there.
func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := Init(ctx, dir, Options{Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	p, err := kek.LoadFile(KEKPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	const rounds = 12
	total := 0
	for round := range rounds {
		acks := runAndKill(t, dir, round, time.Duration(rng.IntN(150))*time.Millisecond)
		total += len(acks)

		s, err := Open(ctx, DBPath(dir), Options{KEK: p, Now: time.Now})
		if err != nil {
			t.Fatalf("round %d: open after kill: %v", round, err)
		}
		rep, err := s.VerifyAudit(ctx)
		if err != nil {
			t.Fatalf("round %d: verify after kill: %v", round, err)
		}
		bySeq := map[uint64]string{}
		for after := uint64(0); ; {
			page, err := s.ListAudit(ctx, audit.Filter{AfterSeq: after, Limit: MaxListLimit})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, r := range page {
				bySeq[r.Seq] = r.RequestID
			}
			after = page[len(page)-1].Seq
		}
		for _, a := range acks {
			f := strings.Fields(a)
			switch f[0] {
			case "key":
				if _, _, err := s.UnwrapKey(ctx, f[1], 1); err != nil {
					t.Fatalf("round %d: acknowledged key %s: %v", round, f[1], err)
				}
			case "audit":
				var seq uint64
				fmt.Sscan(f[2], &seq)
				if bySeq[seq] != f[1] {
					t.Fatalf("round %d: acknowledged audit record %s at seq %d: found %q", round, f[1], seq, bySeq[seq])
				}
			case "policy":
				var v uint32
				fmt.Sscan(f[2], &v)
				if _, err := s.GetPolicy(ctx, f[1], v); err != nil {
					t.Fatalf("round %d: acknowledged policy %s v%d: %v", round, f[1], v, err)
				}
			}
		}
		t.Logf("round %d: %d acknowledged writes present; audit chain %d records", round, len(acks), rep.Records)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if total < rounds {
		t.Fatalf("only %d acknowledged writes in %d rounds; the child did not get to write", total, rounds)
	}
}

// runAndKill starts the child, waits for its first acknowledgement plus
// delay, kills it with SIGKILL, and returns the complete ack lines it wrote.
func runAndKill(t *testing.T, dir string, round int, delay time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, fmt.Sprintf("%s=%d", crashRoundEnv, round))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	var acks []string
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return // EOF; a partial last line was never acknowledged
			}
			if acks = append(acks, strings.TrimSuffix(line, "\n")); len(acks) == 1 {
				close(first)
			}
		}
	}()
	select {
	case <-first:
	case <-readDone:
		cmd.Wait()
		t.Fatalf("round %d: child exited before writing: %s", round, stderr.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("round %d: child wrote nothing in 60s: %s", round, stderr.String())
	}
	time.Sleep(delay)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-readDone
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
		t.Fatalf("round %d: child did not die by the signal: %v; stderr: %s", round, err, stderr.String())
	}
	return acks
}
