package spire

import "syscall"

// sysProcAttr has the kernel kill a child when the thread that started it
// ends, so a test binary that dies (a timeout panic, SIGKILL) does not leave
// SPIRE or kbs running. The Go runtime ends a thread only when a goroutine
// locked to it (runtime.LockOSThread) returns without unlocking, which
// nothing in these tests does, so this fires only when the test binary is
// gone.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
