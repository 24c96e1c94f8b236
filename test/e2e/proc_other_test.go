//go:build !linux

package e2e

import "syscall"

// sysProcAttr: no Pdeathsig outside Linux (the tests skip there anyway).
func sysProcAttr() *syscall.SysProcAttr { return nil }
