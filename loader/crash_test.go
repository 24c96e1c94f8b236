package loader_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cml-project/cml/client/clienttest"
	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/loader"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/tdx/quote"
	"github.com/cml-project/cml/tdx/tdxsim"
)

var auditAll = audit.Filter{Limit: 1000}

func countOps(recs []audit.Record, ops ...string) int {
	n := 0
	for _, r := range recs {
		for _, op := range ops {
			if r.Operation == op {
				n++
			}
		}
	}
	return n
}

// TestMain lets the test binary act as a loader process that the crash
// test kills.
func TestMain(m *testing.M) {
	if os.Getenv("LOADER_CRASH_HELPER") == "1" {
		os.Exit(crashHelper())
	}
	os.Exit(m.Run())
}

// crashHelper runs the loader from environment variables; with
// HELPER_BLOCK_QUOTE it creates HELPER_READY and blocks in the quote
// provider, to be killed there.
func crashHelper() int {
	sim, err := tdxsim.Load(os.Getenv("HELPER_SIM"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var qp quote.Provider = quote.NewSimulated(sim, sim.DefaultTD())
	if ready := os.Getenv("HELPER_BLOCK_QUOTE"); ready != "" {
		qp = blockingQuoter{ready: ready}
	}
	_, err = loader.Run(context.Background(), loader.Config{
		KBS:      os.Getenv("HELPER_KBS"),
		KBSID:    clienttest.KBSID,
		KeyID:    keyID,
		Src:      os.Getenv("HELPER_SRC"),
		Dst:      os.Getenv("HELPER_DST"),
		Identity: identity.Config{SVIDCert: os.Getenv("HELPER_CERT"), SVIDKey: os.Getenv("HELPER_KEY"), Bundle: os.Getenv("HELPER_BUNDLE")},
		Quote:    qp,
		Timeout:  time.Minute,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return loader.ExitCode(err)
}

type blockingQuoter struct{ ready string }

func (q blockingQuoter) GetQuote(ctx context.Context, _ [64]byte) ([]byte, error) {
	os.WriteFile(q.ready, nil, 0o644)
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestRerunAfterKill kills a loader process (SIGKILL) in the middle of a
// run, then checks that a new run succeeds and leaves exactly the model:
// once while the model is being decrypted next to an absent --dst (emdl's
// locked partial), once while attesting with --dst an empty mount point
// (the staging directory).
func TestRerunAfterKill(t *testing.T) {
	simDir := filepath.Join(t.TempDir(), "tdxsim")
	f := newFixture(t, clienttest.Options{SimDir: simDir})
	// A model big enough that decrypting it takes a while.
	big := t.TempDir()
	for name := range plainFiles {
		os.MkdirAll(filepath.Dir(filepath.Join(big, name)), 0o755)
	}
	f.plain = big
	data := make([]byte, 64<<20)
	for name, size := range plainFiles {
		if name == "weights/model-00001.bin" {
			size = len(data)
		}
		if err := os.WriteFile(filepath.Join(big, name), data[:size], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.src = filepath.Join(t.TempDir(), "big.emdl")
	f.encrypt(t, big, f.src, f.dek, 1)
	cert, key, bundle := f.b.WriteSVIDFiles(t, t.TempDir(), "ns/ml/sa/loader")

	start := func(dst string, blockQuote string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "LOADER_CRASH_HELPER=1", "HELPER_SIM="+simDir, "HELPER_KBS="+f.b.Addr,
			"HELPER_SRC="+f.src, "HELPER_DST="+dst, "HELPER_CERT="+cert, "HELPER_KEY="+key, "HELPER_BUNDLE="+bundle,
			"HELPER_BLOCK_QUOTE="+blockQuote)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	waitFor := func(cmd *exec.Cmd, cond func() bool) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		deadline := time.After(60 * time.Second)
		for !cond() {
			select {
			case err := <-done:
				t.Fatalf("the loader process ended (%v) before it could be killed", err)
			case <-deadline:
				cmd.Process.Kill()
				t.Fatal("the loader process never reached the state to kill it in")
			case <-time.After(200 * time.Microsecond):
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}

	t.Run("absent dst, during decryption", func(t *testing.T) {
		parent := t.TempDir()
		dst := filepath.Join(parent, "llama")
		cmd := start(dst, "")
		waitFor(cmd, func() bool {
			for _, n := range entries(t, parent) {
				if strings.Contains(n, ".emdl-partial-") {
					return true
				}
			}
			return false
		})
		left := entries(t, parent)
		if len(left) != 1 || !strings.HasPrefix(left[0], ".llama.emdl-partial-") {
			t.Fatalf("after the kill: %v, want one partial", left)
		}
		if _, err := loader.Run(context.Background(), f.config(t, dst)); err != nil {
			t.Fatalf("rerun: %v", err)
		}
		f.checkModel(t, dst)
		if got := entries(t, parent); len(got) != 1 {
			t.Errorf("after the rerun: %v, want only llama", got)
		}
	})

	t.Run("empty mount point, during attestation", func(t *testing.T) {
		mount := filepath.Join(t.TempDir(), "models")
		os.Mkdir(mount, 0o777)
		ready := filepath.Join(t.TempDir(), "ready")
		cmd := start(mount, ready)
		waitFor(cmd, func() bool { _, err := os.Stat(ready); return err == nil })
		if got := entries(t, mount); len(got) != 1 || got[0] != loader.StagingName {
			t.Fatalf("after the kill: %v, want the staging directory", got)
		}
		if _, err := loader.Run(context.Background(), f.config(t, mount)); err != nil {
			t.Fatalf("rerun: %v", err)
		}
		f.checkModel(t, mount)
	})

	t.Run("empty mount point, killed while moving", func(t *testing.T) {
		// The state a kill between two renames leaves: some entries moved,
		// the rest still staged.
		mount := filepath.Join(t.TempDir(), "models")
		os.MkdirAll(filepath.Join(mount, loader.StagingName, "model", "weights"), 0o755)
		os.WriteFile(filepath.Join(mount, loader.StagingName, "model", "weights", "model-00002.bin"), []byte("stale"), 0o644)
		os.WriteFile(filepath.Join(mount, "config.json"), []byte("stale"), 0o644)
		if _, err := loader.Run(context.Background(), f.config(t, mount)); err != nil {
			t.Fatalf("rerun: %v", err)
		}
		f.checkModel(t, mount)
	})
}
