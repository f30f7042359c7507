package localstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// process is one server started by the stack, in a process group of its
// own so that stopping it also stops anything it spawned.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

// startProcess starts bin with args, logging to dir/<name>.log. When cred is
// non-nil the process runs as that user (PostgreSQL refuses root).
func startProcess(name, dir, bin string, args []string, env []string, cred *syscall.Credential) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the test or drill process dies without cleaning up, the kernel
		// kills the server too: no stray processes.
		Pdeathsig:  syscall.SIGKILL,
		Credential: cred,
	}
	if cred != nil {
		_ = os.Chown(logPath, int(cred.Uid), int(cred.Gid))
	}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close() // nothing was written to it
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logFile.Close() // the server wrote to it, through its own descriptor, and is gone
		close(p.exited)
	}()
	return p, nil
}

// running reports whether the process has not exited.
func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after the grace
// period, and waits for the exit.
func (p *process) stop(grace time.Duration) error {
	if !p.running() {
		return nil
	}
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
		}
	}
	// Kill stragglers of the group (PostgreSQL's backends, for one).
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	return nil
}

// tail returns the end of the process log, for error messages.
func (p *process) tail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// waitReady polls check until it succeeds, the process exits or ctx ends.
func (p *process) waitReady(ctx context.Context, check func(context.Context) error) error {
	var last error
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if !p.running() {
			return fmt.Errorf("%s exited before it was ready (%v); log:\n%s", p.name, p.waitErr, p.tail())
		}
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(attempt)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last check: %v); log:\n%s", p.name, ctx.Err(), last, p.tail())
		case <-tick.C:
		}
	}
}

// freePorts reserves n distinct free TCP ports on 127.0.0.1. The listeners
// are closed before returning, so a port can in rare cases be taken by
// someone else before the server binds it; start-up then fails clearly.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close() // only the port number was wanted
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// PortFree reports whether nothing listens on 127.0.0.1:port.
func PortFree(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond)
	if err != nil {
		return true
	}
	_ = conn.Close() // only that it connected matters
	return false
}

// ErrBinaryMissing is returned when a server binary is not built or installed.
var ErrBinaryMissing = errors.New("localstack: server binary missing")
