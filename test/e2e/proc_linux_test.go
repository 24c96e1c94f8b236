package e2e

import "syscall"

// sysProcAttr has the kernel kill a child when the thread that started it
// ends, so a test binary that dies (a timeout panic, SIGKILL) leaves no kbs
// or loader running. The Go runtime ends a thread only when a goroutine
// locked to it returns without unlocking, which nothing here does, so this
// fires only when the test binary is gone.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
