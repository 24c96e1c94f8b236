//go:build !(linux && (amd64 || arm64))

package emdl

import (
	"errors"
	"os"
	"syscall"
)

// renameNoReplace renames oldpath to newpath unless newpath exists. Without
// renameat2 the check and the rename are two steps.
func renameNoReplace(oldpath, newpath string) error {
	if _, err := os.Lstat(newpath); err == nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EEXIST}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Rename(oldpath, newpath)
}
