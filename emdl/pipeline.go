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
//     fixed set of jobs (chunk buffers). A file's reader takes free jobs from
//     its slot, so memory is bounded by files × depth × (chunk size + tag)
//     whatever the model's size, and buffers are reused: the chunk path does
//     not allocate.
//   - A pool of `workers` goroutines, shared by all files, seals or opens
//     chunks in place and writes each one at its offset (pwrite), so reading,
//     AES-GCM and writing overlap within one file and across files.
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

type engine struct {
	ctx       context.Context
	cancel    context.CancelCauseFunc
	chunkSize int
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
	idx   uint64
	last  bool
	buf   []byte // cap chunkSize+tagSize; never reallocated
	data  []byte // the bytes of this chunk in buf, as the current stage sees them
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
	stride   int64 // offset step per chunk in out
	slot     *slot
	pending  sync.WaitGroup // chunks handed to workers (encrypt) or opened (decrypt), not yet written
	writeErr atomic.Pointer[error]
}

// plan returns the number of workers, files in flight and jobs per file.
func plan(workers, files, chunkSize int) (w, f, depth int) {
	w = workers
	if w <= 0 {
		w = runtime.GOMAXPROCS(0)
	}
	w = min(w, 256)
	f = min(files, max(2, w))
	buf := chunkSize + tagSize
	for f > 1 && f*2*buf > bufferBudget {
		f--
	}
	depth = max(2, min(2*w+2, bufferBudget/(f*buf)))
	return w, f, depth
}

func newEngine(ctx context.Context, workers, files, chunkSize int, progress func(int64)) *engine {
	w, f, depth := plan(workers, files, chunkSize)
	ctx, cancel := context.WithCancelCause(ctx)
	e := &engine{
		ctx:       ctx,
		cancel:    cancel,
		chunkSize: chunkSize,
		progress:  progress,
		work:      make(chan *job, w*2),
		slots:     make(chan *slot, f),
	}
	for range f {
		s := &slot{free: make(chan *job, depth), size: depth}
		for range depth {
			s.free <- &job{buf: make([]byte, chunkSize+tagSize), done: make(chan error, 1)}
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
			e.openAndWrite(j)
		} else {
			e.sealAndWrite(j)
		}
	}
}

// sealAndWrite seals one chunk in place, writes it at its offset and returns
// the job to its slot (the plaintext was hashed before).
func (e *engine) sealAndWrite(j *job) {
	t := j.t
	if e.ctx.Err() == nil {
		j.data = sealChunk(t.aead, t.aad, &j.nonce, j.idx, j.last, j.buf, len(j.data))
		if _, err := t.out.WriteAt(j.data, t.base+int64(j.idx)*t.stride); err != nil {
			e.cancel(&Error{Path: t.path, Err: err, Reason: fmt.Sprintf("writing chunk %d", j.idx)})
		}
	}
	t.slot.free <- j // never blocks: the slot's channel holds all its jobs
	t.pending.Done()
}

// openAndWrite authenticates and decrypts one chunk in place, hands it to
// the file's sequencer (which hashes it) and meanwhile writes it at its
// offset. Whichever of the two finishes last returns the job to its slot.
func (e *engine) openAndWrite(j *job) {
	t := j.t
	if err := e.ctx.Err(); err != nil {
		j.done <- context.Cause(e.ctx)
		return
	}
	pt, err := openChunk(t.aead, t.aad, &j.nonce, j.idx, j.last, j.data)
	if err != nil {
		j.done <- newError(t.path, ErrTampered, fmt.Sprintf("chunk %d failed authentication (tampered, reordered or spliced)", j.idx))
		return
	}
	j.data = pt
	j.refs.Store(2)
	t.pending.Add(1) // before done: the sequencer waits for pending after the last done
	j.done <- nil
	if _, err := t.out.WriteAt(pt, int64(j.idx)*int64(e.chunkSize)); err != nil {
		e.writeFailed(t, j.idx, err)
	}
	t.release(j)
	t.pending.Done()
}

// writeFailed records a failed write of a decrypted chunk. (Out of line so
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

// chunkLen is the plaintext length of chunk idx of a file of length total.
func chunkLen(total uint64, chunkSize int, idx uint64) int {
	start := idx * uint64(chunkSize)
	return int(min(uint64(chunkSize), total-start))
}

// decryptStream opens the n chunks of t read from src (positioned after the
// header), writes the plaintext to t.out and returns its SHA-256 (zero if
// skipHash).
func (e *engine) decryptStream(t *fileTask, src io.Reader, length uint64, nchunks uint64, skipHash bool) ([sha256Size]byte, error) {
	s := t.slot
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
				h.Write(j.data)
			}
			e.report(len(j.data))
		}
		t.release(j)
	}
	t.pending.Wait() // the last writes
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
	for i := uint64(0); i < nchunks; i++ {
		j, err := e.take(s)
		if err != nil {
			return err
		}
		ct := j.buf[:chunkLen(length, e.chunkSize, i)+tagSize]
		if _, err := io.ReadFull(src, ct); err != nil {
			s.free <- j
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return newError(t.path, ErrTruncated, fmt.Sprintf("truncated: chunk %d is incomplete", i))
			}
			return &Error{Path: t.path, Err: err, Reason: fmt.Sprintf("reading chunk %d", i)}
		}
		j.t, j.idx, j.last, j.data = t, i, i == nchunks-1, ct
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
		h.Write(j.data)
		e.report(len(j.data))
		t.pending.Add(1)
		if err := e.submit(s, j); err != nil {
			t.pending.Done()
			firstErr = err
		}
	}
	t.pending.Wait()
	if err := <-readErr; err != nil && firstErr == nil {
		firstErr = err
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
	for i := uint64(0); i < nchunks; i++ {
		j, err := e.take(s)
		if err != nil {
			return err
		}
		pt := j.buf[:chunkLen(length, e.chunkSize, i)]
		if _, err := io.ReadFull(src, pt); err != nil {
			s.free <- j
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return &Error{Path: t.path, Err: errInputChanged, Reason: "input file shrank while being encrypted"}
			}
			return &Error{Path: t.path, Err: err, Reason: "reading input"}
		}
		j.t, j.idx, j.last, j.data = t, i, i == nchunks-1, pt
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
