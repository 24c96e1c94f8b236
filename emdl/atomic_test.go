//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package emdl_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cml-project/cml/emdl"
)

// bigFixture is large enough (4 × 1 MiB in 4 KiB chunks) that a run can be
// interrupted long before it ends.
func bigFixture() map[string]file {
	files := map[string]file{}
	for i := range 4 {
		files[fmt.Sprintf("shard-%d.bin", i)] = file{data: randBytes(uint64(100+i), 1<<20)}
	}
	return files
}

func bigOpts() emdl.EncryptOptions {
	return emdl.EncryptOptions{KeyID: "big", KeyVersion: 1, ChunkSize: 4096}
}

func TestCancelDecrypt(t *testing.T) {
	key := testKey(5)
	model := filepath.Join(t.TempDir(), "model")
	if _, err := emdl.Encrypt(context.Background(), key, writeTree(t, bigFixture()), model, bigOpts()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	out := filepath.Join(t.TempDir(), "out")
	var seenPartial bool
	_, err := emdl.Decrypt(ctx, key, model, out, emdl.DecryptOptions{Progress: func(int64) {
		once.Do(func() {
			// A partial exists while the run is under way.
			entries, _ := os.ReadDir(filepath.Dir(out))
			for _, de := range entries {
				seenPartial = seenPartial || strings.HasPrefix(de.Name(), ".out.emdl-partial-")
			}
			cancel()
		})
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if !seenPartial {
		t.Error("no partial output seen during the run")
	}
	assertNoOutput(t, out)
}

func TestCancelEncrypt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	out := filepath.Join(t.TempDir(), "model")
	opts := bigOpts()
	opts.Progress = func(int64) { once.Do(cancel) }
	_, err := emdl.Encrypt(ctx, testKey(5), writeTree(t, bigFixture()), out, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	assertNoOutput(t, out)
}

func TestFailureRemovesPartial(t *testing.T) {
	// A chunk fails late in the last file: everything written so far goes.
	key := testKey(6)
	model := filepath.Join(t.TempDir(), "model")
	if _, err := emdl.Encrypt(context.Background(), key, writeTree(t, bigFixture()), model, bigOpts()); err != nil {
		t.Fatal(err)
	}
	edit(t, model, "shard-3.bin", func(b []byte) []byte { b[len(b)-1] ^= 1; return b })
	out := filepath.Join(t.TempDir(), "out")
	_, err := emdl.Decrypt(context.Background(), key, model, out, emdl.DecryptOptions{Workers: 1})
	wantRefusal(t, err, emdl.ErrTampered, out, "shard-3.bin")
}

func TestStalePartialsRemoved(t *testing.T) {
	model := fixtureModel(t)
	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	stale := filepath.Join(parent, ".out.emdl-partial-00000000deadbeef")
	os.MkdirAll(filepath.Join(stale, "weights"), 0o700)
	writeFile(t, filepath.Join(stale, "weights", "w.bin"), []byte("half"))
	staleFile := filepath.Join(parent, ".out.emdl-partial-00000000cafef00d")
	writeFile(t, staleFile, []byte("half"))
	// A partial still locked by a live run is left alone.
	live := filepath.Join(parent, ".out.emdl-partial-1111111111111111")
	os.Mkdir(live, 0o700)
	lf, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	// Another target's partial is not ours to remove.
	other := filepath.Join(parent, ".other.emdl-partial-00000000deadbeef")
	os.Mkdir(other, 0o700)

	if _, err := emdl.Decrypt(context.Background(), fixtureKey, model, out, emdl.DecryptOptions{}); err != nil {
		t.Fatal(err)
	}
	assertTree(t, out, fixture)
	for p, want := range map[string]bool{stale: false, staleFile: false, live: true, other: true} {
		if _, err := os.Lstat(p); (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(p), err == nil, want)
		}
	}
}

// TestHelperProcess is not a test: TestKilledRunLeavesNoObstacle runs it in
// a child process that decrypts and hangs mid-way until killed.
func TestHelperProcess(t *testing.T) {
	model, out, marker := os.Getenv("EMDL_HELPER_MODEL"), os.Getenv("EMDL_HELPER_OUT"), os.Getenv("EMDL_HELPER_MARKER")
	if model == "" {
		t.Skip("helper process only")
	}
	var once sync.Once
	emdl.Decrypt(context.Background(), testKey(7), model, out, emdl.DecryptOptions{Progress: func(int64) {
		once.Do(func() {
			os.WriteFile(marker, nil, 0o644)
			select {} // hang, holding the partial, until killed
		})
	}})
	t.Fatal("the helper was not killed")
}

func TestKilledRunLeavesNoObstacle(t *testing.T) {
	key := testKey(7)
	model := filepath.Join(t.TempDir(), "model")
	files := bigFixture()
	if _, err := emdl.Encrypt(context.Background(), key, writeTree(t, files), model, bigOpts()); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	marker := filepath.Join(t.TempDir(), "started")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "EMDL_HELPER_MODEL="+model, "EMDL_HELPER_OUT="+out, "EMDL_HELPER_MARKER="+marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("helper did not start decrypting")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The helper holds its partial (locked; see TestStalePartialsRemoved).
	partials := func() []string {
		m, _ := filepath.Glob(filepath.Join(parent, ".out.emdl-partial-*"))
		return m
	}
	if len(partials()) != 1 {
		t.Fatalf("partials while the helper runs: %q", partials())
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if len(partials()) != 1 {
		t.Fatalf("partials after kill -9: %q", partials())
	}
	if _, err := os.Lstat(out); err == nil {
		t.Fatal("the killed run left output at out")
	}
	// The rerun succeeds and removes the dead run's partial.
	if _, err := emdl.Decrypt(context.Background(), key, model, out, emdl.DecryptOptions{}); err != nil {
		t.Fatal(err)
	}
	assertTree(t, out, files)
	if p := partials(); len(p) != 0 {
		t.Errorf("stale partials remain: %q", p)
	}
}

func TestFifoInModel(t *testing.T) {
	model := fixtureModel(t)
	if err := syscall.Mkfifo(filepath.Join(model, "fifo"), 0o644); err != nil {
		t.Skip(err)
	}
	decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrUnsafePath, "fifo")
}
