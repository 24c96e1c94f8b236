package emdl

import (
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// How one operation moves data (SPEC.md §14):
//
//   - Up to `files` files are processed at once, each in a slot that owns a
//     fixed set of jobs. A job is a run of up to `batch` consecutive chunks,
//     laid out in its buffer as they are in the encrypted file (chunk size +
//     tag apart). A file's reader takes free jobs from its slot, so memory is
//     bounded by files × depth × batch × (chunk size + tag) whatever the
//     model's size, and buffers are reused: the chunk path does not allocate.
//     Chunks smaller than batchBytes are grouped so that the per-job costs
//     (hand-offs between goroutines, system calls) stay small whatever the
//     chunk size; a default 1 MiB chunk is a job of its own.
//   - A pool of `workers` goroutines, shared by all files, seals or opens a
//     job's chunks in place; one writer goroutine per file writes each job
//     at its offset (pwrite), in whatever order jobs come. Reading, AES-GCM
//     and writing overlap within one file and across files. One writer per
//     file, not a write by each worker: the kernel serialises writes to one
//     file (the inode lock), and on tmpfs a worker waiting for that lock
//     spins on it, burning the CPU that sealing or opening needs (measured
//     on 2 cores: ~5% of decryption's CPU; one writer made encryption and
//     decryption 5–30% faster).
//   - The plaintext SHA-256 is inherently sequential: one goroutine per file
//     hashes chunks in order (before sealing when encrypting; when
//     decrypting, as soon as a chunk is opened, while it is being written).
//
// Input is read into the jobs' private buffers, never mapped: a chunk must
// not change between its authentication and its decryption (SPEC.md §14).
//
// The first error cancels the operation; every goroutine then drains and
// returns its jobs, and run returns only when none is left running.

// bufferBudget bounds the chunk buffers of one operation.
const bufferBudget = 48 << 20

// batchBytes is the plaintext a job aims to carry: as many whole chunks as
// fit, at least one. (Larger jobs of 1 MiB chunks, up to 4 MiB, measured no
// faster and double the memory.)
const batchBytes = 1 << 20

type engine struct {
	ctx       context.Context
	cancel    context.CancelCauseFunc
	chunkSize int
	batch     int // chunks per job
	progress  func(int64)
	work      chan *job
	slots     chan *slot
	workers   sync.WaitGroup
}

// slot is the set of jobs one file at a time may use.
type slot struct {
	free chan *job
	size int
}

type job struct {
	t     *fileTask
	idx   uint64 // the first chunk's index
	n     int    // chunks in this job, 1..batch
	plen  int    // plaintext bytes in this job
	last  bool   // the job ends with the file's last chunk
	buf   []byte // len batch×(chunkSize+tagSize); never reallocated
	nonce [nonceSize]byte
	done  chan error   // decrypt: the worker's verdict, read by the file's sequencer
	refs  atomic.Int32 // decrypt: hasher and writer still using buf
}

// fileTask is what the workers need to know about a file.
type fileTask struct {
	path     string // model path, for errors
	decrypt  bool
	aead     cipher.AEAD // stateless after creation: shared by the workers
	aad      []byte      // the file's header digest
	out      *os.File
	base     int64 // offset of chunk 0 in out
	slot     *slot
	writeQ   chan *job      // sealed or opened jobs, for the file's writer
	pending  sync.WaitGroup // jobs handed to workers (encrypt) or opened (decrypt), not yet written
	writeErr atomic.Pointer[error]
}

// plan returns the number of workers, files in flight, jobs per file and
// chunks per job.
func plan(workers, files, chunkSize int) (w, f, depth, batch int) {
	w = workers
	if w <= 0 {
		w = runtime.GOMAXPROCS(0)
	}
	w = min(w, 256)
	batch = max(1, batchBytes/chunkSize)
	f = min(files, max(2, w))
	buf := batch * (chunkSize + tagSize)
	for f > 1 && f*2*buf > bufferBudget {
		f--
	}
	depth = max(2, min(2*w+2, bufferBudget/(f*buf)))
	return w, f, depth, batch
}

func newEngine(ctx context.Context, workers, files, chunkSize int, progress func(int64)) *engine {
	w, f, depth, batch := plan(workers, files, chunkSize)
	ctx, cancel := context.WithCancelCause(ctx)
	e := &engine{
		ctx:       ctx,
		cancel:    cancel,
		chunkSize: chunkSize,
		batch:     batch,
		progress:  progress,
		work:      make(chan *job, w*2),
		slots:     make(chan *slot, f),
	}
	for range f {
		s := &slot{free: make(chan *job, depth), size: depth}
		for range depth {
			s.free <- &job{buf: make([]byte, batch*(chunkSize+tagSize)), done: make(chan error, 1)}
		}
		e.slots <- s
	}
	e.workers.Add(w)
	for range w {
		go e.worker()
	}
	return e
}

// run calls fn for files 0..n-1, at most len(slots) at a time, and returns
// the first error. It always stops the workers before returning.
func (e *engine) run(n int, fn func(i int, s *slot) error) error {
	var wg sync.WaitGroup
dispatch:
	for i := range n {
		var s *slot
		select {
		case s = <-e.slots:
		case <-e.ctx.Done():
			break dispatch
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(i, s); err != nil {
				e.cancel(err)
			}
			e.slots <- s
		}()
	}
	wg.Wait()
	close(e.work)
	e.workers.Wait()
	err := e.ctx.Err()
	if err != nil {
		err = context.Cause(e.ctx)
	}
	e.cancel(nil)
	return err
}

func (e *engine) worker() {
	defer e.workers.Done()
	for j := range e.work {
		if j.t.decrypt {
			e.openJob(j)
		} else {
			e.sealJob(j)
		}
	}
}

// sealJob seals a job's chunks in place and hands the job to the file's
// writer (the plaintext was hashed before).
func (e *engine) sealJob(j *job) {
	t := j.t
	if e.ctx.Err() == nil {
		stride := e.chunkSize + tagSize
		for c := range j.n {
			sealChunk(t.aead, t.aad, &j.nonce, j.idx+uint64(c), j.last && c == j.n-1, j.buf[c*stride:], j.chunkLen(e.chunkSize, c))
		}
	}
	t.writeQ <- j // never blocks: writeQ holds as many jobs as the slot
}

// openJob authenticates and decrypts a job's chunks in place, then hands the
// job both to the file's sequencer (which hashes it) and to its writer.
// Whichever of the two finishes last returns the job to its slot. No chunk
// of a job is written before all of its chunks authenticated.
func (e *engine) openJob(j *job) {
	t := j.t
	if err := e.ctx.Err(); err != nil {
		j.done <- context.Cause(e.ctx)
		return
	}
	stride := e.chunkSize + tagSize
	for c := range j.n {
		ct := j.buf[c*stride : c*stride+j.chunkLen(e.chunkSize, c)+tagSize]
		if _, err := openChunk(t.aead, t.aad, &j.nonce, j.idx+uint64(c), j.last && c == j.n-1, ct); err != nil {
			j.done <- chunkTampered(t.path, j.idx+uint64(c))
			return
		}
	}
	j.refs.Store(2)
	t.pending.Add(1) // before done: the sequencer waits for pending after the last done
	j.done <- nil
	t.writeQ <- j // never blocks: writeQ holds as many jobs as the slot
}

// writer writes a file's jobs at their offsets, in whatever order the
// workers finish them, until writeQ is closed. One writer per file: the
// kernel serialises writes to one file anyway (the inode lock), and a
// second writer would spin on that lock instead of sealing or opening.
func (e *engine) writer(t *fileTask, done chan<- struct{}) {
	defer close(done)
	stride := e.chunkSize + tagSize
	for j := range t.writeQ {
		if e.ctx.Err() == nil && t.writeErr.Load() == nil {
			if t.decrypt {
				// The plaintext chunks lie tag-size apart in buf.
				for c := range j.n {
					if _, err := t.out.WriteAt(j.chunk(e.chunkSize, c), int64(j.idx+uint64(c))*int64(e.chunkSize)); err != nil {
						e.writeFailed(t, j.idx+uint64(c), err)
						break
					}
				}
			} else if _, err := t.out.WriteAt(j.buf[:j.plen+j.n*tagSize], t.base+int64(j.idx)*int64(stride)); err != nil {
				e.writeFailed(t, j.idx, err)
			}
		}
		if t.decrypt {
			t.release(j)
		} else {
			t.slot.free <- j // never blocks: the slot's channel holds all its jobs
		}
		t.pending.Done()
	}
}

// startWriter starts t's writer; the returned function stops it once no job
// is pending.
func (e *engine) startWriter(t *fileTask) (stop func()) {
	t.writeQ = make(chan *job, t.slot.size)
	done := make(chan struct{})
	go e.writer(t, done)
	return func() {
		t.pending.Wait()
		close(t.writeQ)
		<-done
	}
}

// chunkTampered is the error of a chunk that failed authentication. (Out of
// line so that the error does not escape to the heap on the chunk path.)
func chunkTampered(path string, idx uint64) error {
	return newError(path, ErrTampered, fmt.Sprintf("chunk %d failed authentication (tampered, reordered or spliced)", idx))
}

// chunkLen is the plaintext length of the job's chunk c.
func (j *job) chunkLen(chunkSize, c int) int {
	return min(chunkSize, j.plen-c*chunkSize)
}

// chunk is the plaintext of the job's chunk c, where it lies in buf.
func (j *job) chunk(chunkSize, c int) []byte {
	off := c * (chunkSize + tagSize)
	return j.buf[off : off+j.chunkLen(chunkSize, c)]
}

// fill sets the job to chunks idx.. of t (as many as fit, up to nchunks),
// for a file of length plaintext bytes.
func (e *engine) fill(j *job, t *fileTask, idx, nchunks, length uint64) {
	n := min(uint64(e.batch), nchunks-idx)
	end := min(length, (idx+n)*uint64(e.chunkSize))
	j.t, j.idx, j.n, j.last = t, idx, int(n), idx+n == nchunks
	j.plen = int(end - idx*uint64(e.chunkSize))
}

// writeFailed records a failed write of chunk idx. (Out of line so
// that the error does not escape to the heap on the chunk path.)
func (e *engine) writeFailed(t *fileTask, idx uint64, cause error) {
	var err error = &Error{Path: t.path, Err: cause, Reason: fmt.Sprintf("writing chunk %d", idx)}
	t.writeErr.CompareAndSwap(nil, &err)
	e.cancel(err)
}

// release drops one of a decrypted job's two references (hasher, writer).
func (t *fileTask) release(j *job) {
	if j.refs.Add(-1) == 0 {
		t.slot.free <- j
	}
}

func (e *engine) take(s *slot) (*job, error) {
	select {
	case j := <-s.free:
		return j, nil
	case <-e.ctx.Done():
		return nil, context.Cause(e.ctx)
	}
}

func (e *engine) submit(s *slot, j *job) error {
	select {
	case e.work <- j:
		return nil
	case <-e.ctx.Done():
		s.free <- j
		return context.Cause(e.ctx)
	}
}

func (e *engine) report(n int) {
	if e.progress != nil && n > 0 {
		e.progress(int64(n))
	}
}

// decryptStream opens the n chunks of t read from src (positioned after the
// header), writes the plaintext to t.out and returns its SHA-256 (zero if
// skipHash).
func (e *engine) decryptStream(t *fileTask, src io.Reader, length uint64, nchunks uint64, skipHash bool) ([sha256Size]byte, error) {
	s := t.slot
	stopWriter := e.startWriter(t)
	order := make(chan *job, s.size)
	readErr := make(chan error, 1)
	go func() {
		defer close(order)
		readErr <- e.feedDecrypt(t, src, length, nchunks, order)
	}()

	var h hash.Hash
	if !skipHash {
		h = sha256.New()
	}
	var firstErr error
	for j := range order {
		// Every job in order was handed to a worker, which always answers.
		err := <-j.done
		if err != nil {
			if firstErr == nil {
				firstErr = err
				e.cancel(err)
			}
			s.free <- j // a failed job has no writer
			continue
		}
		if firstErr == nil {
			if h != nil {
				for c := range j.n {
					h.Write(j.chunk(e.chunkSize, c))
				}
			}
			e.report(j.plen)
		}
		t.release(j)
	}
	stopWriter() // after the last writes
	if err := <-readErr; err != nil && firstErr == nil {
		firstErr = err
	}
	if err := t.writeErr.Load(); err != nil && firstErr == nil {
		firstErr = *err
	}
	var sum [sha256Size]byte
	if firstErr != nil {
		return sum, firstErr
	}
	if h != nil {
		h.Sum(sum[:0])
	}
	return sum, nil
}

func (e *engine) feedDecrypt(t *fileTask, src io.Reader, length, nchunks uint64, order chan<- *job) error {
	s := t.slot
	stride := e.chunkSize + tagSize
	for i := uint64(0); i < nchunks; i += uint64(e.batch) {
		j, err := e.take(s)
		if err != nil {
			return err
		}
		e.fill(j, t, i, nchunks, length)
		// The job's chunks are contiguous in the file: one read.
		if n, err := io.ReadFull(src, j.buf[:j.plen+j.n*tagSize]); err != nil {
			s.free <- j
			bad := i + uint64(n/stride)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return newError(t.path, ErrTruncated, fmt.Sprintf("truncated: chunk %d is incomplete", bad))
			}
			return &Error{Path: t.path, Err: err, Reason: fmt.Sprintf("reading chunk %d", bad)}
		}
		if err := e.submit(s, j); err != nil {
			return err
		}
		order <- j // never blocks: order holds as many jobs as the slot
	}
	// The size was checked before; this catches a file growing meanwhile.
	var one [1]byte
	if n, _ := src.Read(one[:]); n > 0 {
		return newError(t.path, ErrExtended, "extended: data after the last chunk")
	}
	return nil
}

// encryptStream reads length bytes of plaintext from src, seals them into
// t.out after the header and returns the plaintext's SHA-256.
func (e *engine) encryptStream(t *fileTask, src io.Reader, length uint64, nchunks uint64) ([sha256Size]byte, error) {
	s := t.slot
	stopWriter := e.startWriter(t)
	hashQ := make(chan *job, s.size)
	readErr := make(chan error, 1)
	go func() {
		defer close(hashQ)
		readErr <- e.feedEncrypt(t, src, length, nchunks, hashQ)
	}()

	h := sha256.New()
	var firstErr error
	for j := range hashQ {
		if firstErr != nil {
			s.free <- j
			continue
		}
		for c := range j.n {
			h.Write(j.chunk(e.chunkSize, c))
		}
		e.report(j.plen)
		t.pending.Add(1)
		if err := e.submit(s, j); err != nil {
			t.pending.Done()
			firstErr = err
		}
	}
	stopWriter() // after the last writes
	if err := <-readErr; err != nil && firstErr == nil {
		firstErr = err
	}
	if err := t.writeErr.Load(); err != nil && firstErr == nil {
		firstErr = *err
	}
	var sum [sha256Size]byte
	if firstErr == nil && e.ctx.Err() != nil {
		firstErr = context.Cause(e.ctx)
	}
	if firstErr != nil {
		return sum, firstErr
	}
	h.Sum(sum[:0])
	return sum, nil
}

func (e *engine) feedEncrypt(t *fileTask, src io.Reader, length, nchunks uint64, hashQ chan<- *job) error {
	s := t.slot
	for i := uint64(0); i < nchunks; i += uint64(e.batch) {
		j, err := e.take(s)
		if err != nil {
			return err
		}
		e.fill(j, t, i, nchunks, length)
		// Each chunk is read to where its ciphertext will be, tag-size
		// gaps apart, so that it is sealed in place and the job is
		// written with one pwrite.
		for c := range j.n {
			if _, err := io.ReadFull(src, j.chunk(e.chunkSize, c)); err != nil {
				s.free <- j
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return &Error{Path: t.path, Err: errInputChanged, Reason: "input file shrank while being encrypted"}
				}
				return &Error{Path: t.path, Err: err, Reason: "reading input"}
			}
		}
		hashQ <- j // never blocks: hashQ holds as many jobs as the slot
	}
	var one [1]byte
	if n, _ := src.Read(one[:]); n > 0 {
		return &Error{Path: t.path, Err: errInputChanged, Reason: "input file grew while being encrypted"}
	}
	return nil
}

// errInputChanged is the cause of an Encrypt failure because an input file
// changed size while it was read.
var errInputChanged = errors.New("input changed during encryption")
