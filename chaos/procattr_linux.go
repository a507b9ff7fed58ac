package chaos

import "syscall"

// childAttr makes a child die with the suite: a test killed by its timeout must not leave an agent
// or a broker running.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
