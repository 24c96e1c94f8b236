package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCompactPurgesDestroyedKeys is the proof that compaction removes what
// destroy cannot: the sealed bytes bbolt leaves in freed pages.
func TestCompactPurgesDestroyedKeys(t *testing.T) {
	e := newEnv(t)
	s := e.s
	for _, id := range []string{"m", "other", "gone"} {
		if _, err := s.CreateKey(ctx, id, KeyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := s.RotateKey(ctx, "m"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutPolicy(ctx, "m", []byte("policy bytes")); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := s.AppendAudit(ctx, entry(fmt.Sprintf("req-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	destroyed := map[string][]byte{"m/1": e.sealedOf(t, "m", 1), "gone/1": e.sealedOf(t, "gone", 1)}
	live := map[string][]byte{"m/2": e.sealedOf(t, "m", 2), "m/3": e.sealedOf(t, "m", 3), "other/1": e.sealedOf(t, "other", 1)}
	deks := map[string][]byte{}
	for name, sealed := range live {
		if sealed == nil {
			t.Fatalf("%s: no sealed DEK", name)
		}
		var id string
		var v uint32
		fmt.Sscanf(strings.Replace(name, "/", " ", 1), "%s %d", &id, &v)
		dek, _, err := s.UnwrapKey(ctx, id, v)
		if err != nil {
			t.Fatal(err)
		}
		deks[name] = dek
	}
	if _, err := s.DestroyVersion(ctx, "m", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DestroyKey(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	for name, sealed := range destroyed {
		if sealed == nil {
			t.Fatalf("%s: no sealed DEK before destroy", name)
		}
		if e.liveTreeContains(t, sealed) {
			t.Fatalf("%s: sealed bytes still in the B+tree after destroy", name)
		}
	}
	e.close(t)
	if err := os.Chmod(e.path, 0o640); err != nil {
		t.Fatal(err)
	}

	// What destroy leaves behind, in the raw file.
	file := readFile(t, e.path)
	leftBehind := 0
	for name, sealed := range destroyed {
		if bytes.Contains(file, sealed) {
			leftBehind++
			t.Logf("before compaction: %s's sealed bytes are still in the file's free pages", name)
		}
	}
	if leftBehind == 0 {
		t.Log("before compaction: bbolt had already overwritten the destroyed sealed bytes; only the weaker property (absent after compaction) is tested")
	}
	// A file shared with a hard link is not overwritten; an open
	// descriptor does not count as a link, so this one sees the scrub.
	oldFD, err := os.Open(e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer oldFD.Close()

	res, err := Compact(ctx, e.path, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted: %d → %d bytes, %d entries, %d audit records", res.SizeBefore, res.SizeAfter, res.Entries, res.AuditRecords)
	if res.SizeBefore != int64(len(file)) || res.SizeAfter <= 0 || res.AuditRecords != 5 || len(res.Warnings) != 0 || res.StaleTemp != "" {
		t.Errorf("result %+v", res)
	}

	file = readFile(t, e.path)
	if int64(len(file)) != res.SizeAfter {
		t.Errorf("file has %d bytes, result says %d", len(file), res.SizeAfter)
	}
	for name, sealed := range destroyed {
		if bytes.Contains(file, sealed) {
			t.Errorf("after compaction: %s's sealed bytes are still in the file", name)
		}
	}
	// The same search finds the live sealed records, so the absence above
	// is meaningful.
	for name, sealed := range live {
		if !bytes.Contains(file, sealed) {
			t.Errorf("after compaction: %s's sealed bytes are missing from the file", name)
		}
	}
	if got := mode(t, e.path); got != 0o640 {
		t.Errorf("compacted file has mode %04o, want the original 0640", got)
	}
	if _, err := os.Lstat(e.path + CompactTempSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temp file left behind: %v", err)
	}
	if !res.Scrubbed {
		t.Error("the old file was not overwritten")
	}
	old := make([]byte, res.SizeBefore)
	if _, err := oldFD.ReadAt(old, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(old, make([]byte, len(old))) {
		t.Error("the old (unlinked) file still has non-zero bytes after the scrub")
	}

	if err := e.reopen(t); err != nil {
		t.Fatal(err)
	}
	for name, want := range deks {
		var id string
		var v uint32
		fmt.Sscanf(strings.Replace(name, "/", " ", 1), "%s %d", &id, &v)
		got, _, err := e.s.UnwrapKey(ctx, id, v)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after compaction: %v (same bytes: %v)", name, err, bytes.Equal(got, want))
		}
	}
	if _, _, err := e.s.UnwrapKey(ctx, "m", 1); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("destroyed version after compaction: %v", err)
	}
	if _, err := e.s.CreateKey(ctx, "gone", KeyOptions{}); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("re-creating a destroyed id after compaction: %v", err)
	}
	if _, err := e.s.ImportKey(ctx, "gone", bytes.Repeat([]byte{7}, 32), KeyOptions{}); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("importing a destroyed id after compaction: %v", err)
	}
	if p, err := e.s.GetPolicy(ctx, "m", 0); err != nil || string(p.Bytes) != "policy bytes" {
		t.Errorf("policy after compaction: %+v, %v", p, err)
	}
	rep, err := e.s.VerifyAudit(ctx)
	if err != nil || rep.Records != 5 {
		t.Errorf("audit after compaction: %+v, %v", rep, err)
	}
	// The compacted store keeps working.
	if _, err := e.s.AppendAudit(ctx, entry("req-after")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.RotateKey(ctx, "other"); err != nil {
		t.Fatal(err)
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCompactRefusesWhileOpen(t *testing.T) {
	e := newEnv(t)
	if _, err := e.s.CreateKey(ctx, "m", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, e.path)
	opts := e.opts
	opts.LockTimeout = 50 * time.Millisecond
	_, err := Compact(ctx, e.path, opts)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "database is in use by a running kbs; stop it first") || !strings.Contains(err.Error(), e.path) {
		t.Fatalf("Compact of an open database: %v", err)
	}
	if !bytes.Equal(readFile(t, e.path), before) {
		t.Error("the database changed")
	}
	if _, err := os.Lstat(e.path + CompactTempSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temp file created: %v", err)
	}
}

func TestCompactMissing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nope.db")
	_, err := Compact(ctx, path, Options{KEK: testKEK(t, 1), Now: newClock().Now})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Compact of a missing file: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("Compact created %v", entries)
	}
	// A directory is not a database.
	if _, err := Compact(ctx, dir, Options{KEK: testKEK(t, 1), Now: newClock().Now}); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Compact of a directory: %v", err)
	}
}

func TestCompactRefusesWrongKEKAndBrokenAudit(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		if _, err := e.s.AppendAudit(ctx, entry(fmt.Sprintf("req-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	e.close(t)
	wrong := e.opts
	wrong.KEK = testKEK(t, 2)
	if _, err := Compact(ctx, e.path, wrong); !errors.Is(err, ErrWrongKEK) {
		t.Errorf("Compact under another KEK: %v", err)
	}

	// Delete a record in the middle: Open's Check does not walk the chain,
	// but Compact verifies it and refuses to copy a broken one.
	if err := e.reopen(t); err != nil {
		t.Fatal(err)
	}
	e.raw(t, func(tx *bolt.Tx) error { return tx.Bucket(bucketAudit).Delete(seqKey(2)) })
	e.close(t)
	before := readFile(t, e.path)
	_, err := Compact(ctx, e.path, e.opts)
	if err == nil || !strings.Contains(err.Error(), "audit chain does not verify") {
		t.Fatalf("Compact with a broken audit chain: %v", err)
	}
	if !bytes.Equal(readFile(t, e.path), before) {
		t.Error("the database changed")
	}
}

func TestCompactStaleTempAndHardLink(t *testing.T) {
	e := newEnv(t)
	if _, err := e.s.CreateKey(ctx, "m", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	e.close(t)
	tmp := e.path + CompactTempSuffix
	if err := os.WriteFile(tmp, []byte("half a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	backup := e.path + ".backup"
	if err := os.Link(e.path, backup); err != nil {
		t.Skipf("no hard links here: %v", err)
	}
	before := readFile(t, e.path)
	res, err := Compact(ctx, e.path, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.StaleTemp != tmp {
		t.Errorf("StaleTemp %q, want %q", res.StaleTemp, tmp)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temp file left behind: %v", err)
	}
	// The hard link keeps the old file: it is not overwritten, and the
	// operator is told.
	if res.Scrubbed || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "hard link") {
		t.Errorf("Scrubbed %v, warnings %q", res.Scrubbed, res.Warnings)
	}
	if !bytes.Equal(readFile(t, backup), before) {
		t.Error("the hard-linked old file was changed")
	}
	if err := e.reopen(t); err != nil {
		t.Fatal(err)
	}
}

// TestOpenNoticesReplacement: an Open that waited for the lock of a file
// that Compact then renamed a new file over must not serve the old one.
func TestOpenNoticesReplacement(t *testing.T) {
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skipf("needs /proc/self/fd: %v", err)
	}
	e := newEnv(t)
	if _, err := e.s.CreateKey(ctx, "m", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	replacement := e.path + ".new"
	if err := os.WriteFile(replacement, readFile(t, e.path), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := e.opts
	opts.LockTimeout = 20 * time.Second
	done := make(chan error, 1)
	go func() {
		s, err := Open(ctx, e.path, opts)
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	// Wait until the second Open holds a descriptor of the file (and so
	// waits for its lock).
	for deadline := time.Now().Add(10 * time.Second); openCount(t, e.path) < 2; {
		if time.Now().After(deadline) {
			t.Fatal("the second Open never opened the file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := os.Rename(replacement, e.path); err != nil {
		t.Fatal(err)
	}
	e.close(t)
	err := <-done
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "was replaced") {
		t.Fatalf("Open of a replaced file: %v", err)
	}
	// Started again, it opens the new file.
	if err := e.reopen(t); err != nil {
		t.Fatal(err)
	}
}

// openCount counts this process's descriptors open on path.
func openCount(t *testing.T, path string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, en := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", en.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}
