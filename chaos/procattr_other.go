//go:build !linux

package chaos

import "syscall"

// ChildAttr is nil where Pdeathsig does not exist.
func ChildAttr() *syscall.SysProcAttr { return nil }
