package emdl

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Outputs are written under a temporary name beside the target,
//
//	<parent>/.<base>.emdl-partial-<16 random hex digits>
//
// locked (flock) by the writing process, and renamed into place only when
// everything verified. A partial whose lock nobody holds belongs to a run that
// died (kill -9, OOM, node reboot); the next run for the same target removes
// it. A partial that is still locked belongs to a live run and is left alone.

const partialInfix = ".emdl-partial-"

func partialPrefix(final string) string { return "." + filepath.Base(final) + partialInfix }

type partial struct {
	final string
	path  string
	dir   bool
	lock  *os.File // the partial itself (file or directory), flock'ed
}

// createPartial removes stale partials of final and creates a fresh one.
func createPartial(final string, dir bool) (*partial, error) {
	removeStalePartials(final)
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("emdl: %w", err)
	}
	p := &partial{
		final: final,
		path:  filepath.Join(filepath.Dir(final), partialPrefix(final)+hex.EncodeToString(rnd[:])),
		dir:   dir,
	}
	var err error
	if dir {
		if err = os.Mkdir(p.path, 0o700); err == nil {
			p.lock, err = os.Open(p.path)
		}
	} else {
		p.lock, err = os.OpenFile(p.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	}
	if err != nil {
		os.RemoveAll(p.path)
		return nil, &Error{Path: final, Err: err, Reason: "creating temporary output"}
	}
	if err := lockFile(p.lock); err != nil {
		p.lock.Close()
		os.RemoveAll(p.path)
		return nil, &Error{Path: final, Err: err, Reason: "locking temporary output"}
	}
	return p, nil
}

// abort removes the partial output.
func (p *partial) abort() {
	os.RemoveAll(p.path)
	p.lock.Close()
}

// commit syncs the partial, renames it to its final name and syncs the
// parent directory. replace allows replacing an existing empty directory.
func (p *partial) commit(replace bool) error {
	if p.dir {
		if err := syncTree(p.path); err != nil {
			return &Error{Path: p.final, Err: err, Reason: "syncing output"}
		}
	} else if err := p.lock.Sync(); err != nil {
		return &Error{Path: p.final, Err: err, Reason: "syncing output"}
	}
	var err error
	if replace {
		// syscall.Rename, not os.Rename: os.Rename refuses any existing
		// directory; rename(2) replaces an empty one atomically and fails
		// if it is no longer empty.
		if err = syscall.Rename(p.path, p.final); err != nil {
			err = &os.LinkError{Op: "rename", Old: p.path, New: p.final, Err: err}
		}
	} else {
		err = renameNoReplace(p.path, p.final)
	}
	if err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
			return &Error{Path: p.final, Err: ErrOutputExists, Reason: "output appeared while it was being written: " + err.Error()}
		}
		return &Error{Path: p.final, Err: err, Reason: "renaming output into place"}
	}
	p.lock.Close()
	// The rename is durable only once the parent directory is synced. The
	// output is complete and verified by now, so a failure here (which no
	// tmpfs has) is not reported as a failure of the operation.
	_ = syncDir(filepath.Dir(p.final))
	return nil
}

// removeStalePartials removes the partials of final that no live process
// holds locked. Errors are ignored: a leftover never blocks a run.
func removeStalePartials(final string) {
	parent := filepath.Dir(final)
	prefix := partialPrefix(final)
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, de := range entries {
		if !strings.HasPrefix(de.Name(), prefix) {
			continue
		}
		path := filepath.Join(parent, de.Name())
		if de.Type()&fs.ModeSymlink != 0 {
			os.Remove(path) // removes the link, never its target
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		if tryLockFile(f) {
			os.RemoveAll(path)
		}
		f.Close()
	}
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err // EINVAL: the filesystem cannot sync directories
	}
	return nil
}

// syncTree syncs every directory under root (files are synced as written).
func syncTree(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return syncDir(path)
		}
		return nil
	})
}

// checkOutput refuses an existing out; with allowEmptyDir an existing empty
// directory is accepted and reported.
func checkOutput(out string, allowEmptyDir bool) (emptyDir bool, err error) {
	fi, err := os.Lstat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, &Error{Path: out, Err: err, Reason: "checking output"}
	}
	if allowEmptyDir && fi.IsDir() {
		entries, err := os.ReadDir(out)
		if err != nil {
			return false, &Error{Path: out, Err: err, Reason: "checking output"}
		}
		if len(entries) == 0 {
			return true, nil
		}
		return false, newError(out, ErrOutputExists, "output directory exists and is not empty")
	}
	return false, newError(out, ErrOutputExists, "output already exists")
}

// checkNotInside refuses an output at or below the input: the output (and
// its partial) would be read as part of the input.
func checkNotInside(in, out string) error {
	ai, err := absResolved(in)
	if err != nil {
		return &Error{Path: in, Err: err, Reason: "resolving input"}
	}
	ao, err := absResolved(filepath.Dir(out))
	if err != nil {
		return &Error{Path: out, Err: err, Reason: "resolving output"}
	}
	ao = filepath.Join(ao, filepath.Base(out))
	if ao == ai || strings.HasPrefix(ao, ai+string(filepath.Separator)) {
		return &Error{Path: out, Err: ErrUnsafePath, Reason: "output is inside the input"}
	}
	return nil
}

func absResolved(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(p)
}
