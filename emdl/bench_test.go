package emdl

import (
	"bufio"
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchDir is where the large benchmarks write: tmpfs when there is one,
// which is where the loader writes models.
func benchDir(tb testing.TB) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "emdl-bench-")
		if err == nil {
			tb.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return tb.TempDir()
}

// writeRandomFile writes size pseudo-random bytes in 1 MiB pieces, so the
// test's own memory stays small.
func writeRandomFile(tb testing.TB, path string, size int64) {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	for size > 0 {
		n := min(int64(len(buf)), size)
		r.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			tb.Fatal(err)
		}
		size -= n
	}
}

func benchKeys(b *testing.B) *fileKeys {
	k, err := newFileKeys(suiteAES256GCMStream, fileKey(make([]byte, KeySize), make([]byte, saltSize), suiteAES256GCMStream, "bench"))
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// BenchmarkSealChunk is the encrypt chunk path alone: one 1 MiB chunk sealed
// in place. It must not allocate.
func BenchmarkSealChunk(b *testing.B) {
	k := benchKeys(b)
	aad := make([]byte, digestSize)
	buf := make([]byte, DefaultChunkSize+tagSize)
	var nonce [nonceSize]byte
	b.ReportAllocs()
	b.SetBytes(DefaultChunkSize)
	var i uint64
	for b.Loop() {
		sealChunk(k.aead, aad, &nonce, i, false, buf, DefaultChunkSize)
		i++
	}
}

// BenchmarkSHA256 is the plaintext hash alone, 1 MiB at a time: the one
// step of encryption that cannot be spread over cores within a file
// (scripts/bench.sh compares it, and cp, with encryption).
func BenchmarkSHA256(b *testing.B) {
	buf := make([]byte, DefaultChunkSize)
	h := sha256.New()
	b.ReportAllocs()
	b.SetBytes(DefaultChunkSize)
	for b.Loop() {
		h.Write(buf)
	}
}

// BenchmarkOpenChunk is the decrypt chunk path alone: one 1 MiB chunk
// authenticated and decrypted. It must not allocate.
func BenchmarkOpenChunk(b *testing.B) {
	k := benchKeys(b)
	aad := make([]byte, digestSize)
	var nonce [nonceSize]byte
	ct := sealChunk(k.aead, aad, &nonce, 7, true, make([]byte, DefaultChunkSize+tagSize), DefaultChunkSize)
	pt := make([]byte, DefaultChunkSize)
	b.ReportAllocs()
	b.SetBytes(DefaultChunkSize)
	for b.Loop() {
		if _, err := openChunkTo(k.aead, aad, &nonce, 7, true, pt[:0], ct); err != nil {
			b.Fatal(err)
		}
	}
}

func TestChunkPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	k, err := newFileKeys(suiteAES256GCMStream, fileKey(make([]byte, KeySize), make([]byte, saltSize), suiteAES256GCMStream, "x"))
	if err != nil {
		t.Fatal(err)
	}
	aad := make([]byte, digestSize)
	buf := make([]byte, 4096+tagSize)
	var nonce [nonceSize]byte
	allocs := testing.AllocsPerRun(100, func() {
		ct := sealChunk(k.aead, aad, &nonce, 3, false, buf, 4096)
		if _, err := openChunk(k.aead, aad, &nonce, 3, false, ct); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("seal+open of a chunk: %v allocations, want 0", allocs)
	}
}

// TestPipelineDoesNotAllocatePerChunk compares the allocations of encrypting
// and decrypting files of 16 and 1024 chunks: the difference must not grow
// with the number of chunks.
func TestPipelineDoesNotAllocatePerChunk(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	dir := t.TempDir()
	key := make([]byte, KeySize)
	run := 0
	mallocs := func(chunks int) (enc, dec uint64) {
		run++
		in := filepath.Join(dir, "in-"+strconv.Itoa(run))
		writeRandomFile(t, in, int64(chunks)*4096)
		model, out := in+".model", in+".out"
		var a, b, c runtime.MemStats
		runtime.ReadMemStats(&a)
		if _, err := Encrypt(context.Background(), key, in, model, EncryptOptions{KeyID: "k", KeyVersion: 1, ChunkSize: 4096}); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&b)
		if _, err := Decrypt(context.Background(), key, model, out, DecryptOptions{}); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&c)
		return b.Mallocs - a.Mallocs, c.Mallocs - b.Mallocs
	}
	mallocs(16) // warm up
	enc16, dec16 := mallocs(16)
	enc1k, dec1k := mallocs(1024)
	t.Logf("allocations: encrypt %d → %d, decrypt %d → %d (16 → 1024 chunks)", enc16, enc1k, dec16, dec1k)
	if enc1k > enc16+100 || dec1k > dec16+100 {
		t.Errorf("allocations grow with the number of chunks: encrypt %d → %d, decrypt %d → %d", enc16, enc1k, dec16, dec1k)
	}
}

const benchFileSize = 256 << 20

// BenchmarkEncrypt256MiB encrypts one 256 MiB file (tmpfs when available).
func BenchmarkEncrypt256MiB(b *testing.B) {
	dir := benchDir(b)
	in := filepath.Join(dir, "plain.bin")
	writeRandomFile(b, in, benchFileSize)
	key := make([]byte, KeySize)
	b.ReportAllocs()
	b.SetBytes(benchFileSize)
	for i := 0; b.Loop(); i++ {
		out := filepath.Join(dir, "model-"+strconv.Itoa(i))
		if _, err := Encrypt(context.Background(), key, in, out, EncryptOptions{KeyID: "bench", KeyVersion: 1}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(out)
		b.StartTimer()
	}
}

// BenchmarkDecrypt256MiB verifies and decrypts one 256 MiB file.
func BenchmarkDecrypt256MiB(b *testing.B) {
	dir := benchDir(b)
	in := filepath.Join(dir, "plain.bin")
	writeRandomFile(b, in, benchFileSize)
	key := make([]byte, KeySize)
	model := filepath.Join(dir, "model")
	if _, err := Encrypt(context.Background(), key, in, model, EncryptOptions{KeyID: "bench", KeyVersion: 1}); err != nil {
		b.Fatal(err)
	}
	os.Remove(in)
	b.ReportAllocs()
	b.SetBytes(benchFileSize)
	for i := 0; b.Loop(); i++ {
		out := filepath.Join(dir, "out-"+strconv.Itoa(i))
		if _, err := Decrypt(context.Background(), key, model, out, DecryptOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(out)
		b.StartTimer()
	}
}

// BenchmarkCopy256MiB is the baseline the large benchmarks compare with: a
// plain copy of the same file, as cp does it (copy_file_range where the
// kernel offers it).
func BenchmarkCopy256MiB(b *testing.B) {
	dir := benchDir(b)
	in := filepath.Join(dir, "plain.bin")
	writeRandomFile(b, in, benchFileSize)
	b.SetBytes(benchFileSize)
	for i := 0; b.Loop(); i++ {
		out := filepath.Join(dir, "copy-"+strconv.Itoa(i))
		copyFile(b, in, out)
		b.StopTimer()
		os.Remove(out)
		b.StartTimer()
	}
}

func copyFile(b *testing.B, from, to string) {
	src, err := os.Open(from)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	if _, err := dst.ReadFrom(src); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDecrypt256MiBSkipHash is BenchmarkDecrypt256MiB without the
// plaintext SHA-256 re-check (DecryptOptions.SkipPlaintextHash).
func BenchmarkDecrypt256MiBSkipHash(b *testing.B) {
	dir := benchDir(b)
	in := filepath.Join(dir, "plain.bin")
	writeRandomFile(b, in, benchFileSize)
	key := make([]byte, KeySize)
	model := filepath.Join(dir, "model")
	if _, err := Encrypt(context.Background(), key, in, model, EncryptOptions{KeyID: "bench", KeyVersion: 1}); err != nil {
		b.Fatal(err)
	}
	os.Remove(in)
	b.ReportAllocs()
	b.SetBytes(benchFileSize)
	for i := 0; b.Loop(); i++ {
		out := filepath.Join(dir, "out-"+strconv.Itoa(i))
		if _, err := Decrypt(context.Background(), key, model, out, DecryptOptions{SkipPlaintextHash: true}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(out)
		b.StartTimer()
	}
}

// BenchmarkDecrypt8x32MiB decrypts a directory model of eight 32 MiB files:
// files are processed in parallel.
func BenchmarkDecrypt8x32MiB(b *testing.B) {
	dir := benchDir(b)
	in := filepath.Join(dir, "plain")
	os.Mkdir(in, 0o755)
	for i := range 8 {
		writeRandomFile(b, filepath.Join(in, "shard-"+strconv.Itoa(i)), benchFileSize/8)
	}
	key := make([]byte, KeySize)
	model := filepath.Join(dir, "model")
	if _, err := Encrypt(context.Background(), key, in, model, EncryptOptions{KeyID: "bench", KeyVersion: 1}); err != nil {
		b.Fatal(err)
	}
	os.RemoveAll(in)
	b.ReportAllocs()
	b.SetBytes(benchFileSize)
	for i := 0; b.Loop(); i++ {
		out := filepath.Join(dir, "out-"+strconv.Itoa(i))
		if _, err := Decrypt(context.Background(), key, model, out, DecryptOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(out)
		b.StartTimer()
	}
}

// TestMemoryBounded decrypts a 512 MiB file (64 MiB with -race) while
// sampling the heap: peak heap in use must stay far below the file's size,
// and the process's peak RSS below 100 MiB.
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a large file")
	}
	size := int64(512 << 20)
	if raceEnabled {
		size = 64 << 20
	}
	dir := t.TempDir() // not /dev/shm: it can be small (containers)
	in := filepath.Join(dir, "plain.bin")
	writeRandomFile(t, in, size)
	key := make([]byte, KeySize)
	model := filepath.Join(dir, "model")
	if _, err := Encrypt(context.Background(), key, in, model, EncryptOptions{KeyID: "mem", KeyVersion: 1}); err != nil {
		t.Fatal(err)
	}
	os.Remove(in)

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	sum, err := Decrypt(context.Background(), key, model, filepath.Join(dir, "out"), DecryptOptions{})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Bytes != size {
		t.Fatalf("decrypted %d bytes, want %d", sum.Bytes, size)
	}
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("decrypting %d MiB: peak heap in use %d MiB (%d MiB above the start)", size>>20, peak.Load()>>20, grew>>20)
	if grew > bufferBudget+(16<<20) {
		t.Errorf("heap grew by %d MiB while decrypting %d MiB: not bounded", grew>>20, size>>20)
	}
	if hwm := peakRSS(t); hwm > 0 && !raceEnabled {
		t.Logf("process peak RSS %d MiB", hwm>>20)
		if hwm > 100<<20 {
			t.Errorf("peak RSS %d MiB, want < 100 MiB", hwm>>20)
		}
	}
}

// peakRSS returns VmHWM from /proc/self/status, or 0 where there is none.
func peakRSS(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	return 0
}
