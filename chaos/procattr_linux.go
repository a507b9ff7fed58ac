package chaos

import "syscall"

// ChildAttr makes a child die with its parent (Pdeathsig): a test killed by its timeout must not leave an agent
// or a broker running.
func ChildAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
