//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package emdl

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive flock on f, held until f is closed (or the
// process dies: the kernel then drops it, which marks the partial stale).
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// tryLockFile reports whether f could be locked, i.e. no live run holds it.
func tryLockFile(f *os.File) bool {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}
