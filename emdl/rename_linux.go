//go:build linux && (amd64 || arm64)

package emdl

import (
	"errors"
	"os"
	"syscall"
	"unsafe"
)

const renameNoReplaceFlag = 0x1 // RENAME_NOREPLACE

// renameNoReplace renames oldpath to newpath, failing with EEXIST if newpath
// exists (renameat2 RENAME_NOREPLACE), so a concurrent writer of newpath is
// never overwritten. Filesystems without the flag fall back to a check.
func renameNoReplace(oldpath, newpath string) error {
	o, err := syscall.BytePtrFromString(oldpath)
	if err != nil {
		return err
	}
	n, err := syscall.BytePtrFromString(newpath)
	if err != nil {
		return err
	}
	atFDCWD := -0x64
	_, _, errno := syscall.Syscall6(sysRenameat2, uintptr(atFDCWD), uintptr(unsafe.Pointer(o)),
		uintptr(atFDCWD), uintptr(unsafe.Pointer(n)), renameNoReplaceFlag, 0)
	switch errno {
	case 0:
		return nil
	case syscall.ENOSYS, syscall.EINVAL:
		return renameCheck(oldpath, newpath)
	}
	return &os.LinkError{Op: "renameat2", Old: oldpath, New: newpath, Err: errno}
}

func renameCheck(oldpath, newpath string) error {
	if _, err := os.Lstat(newpath); err == nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EEXIST}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Rename(oldpath, newpath)
}
