package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Redis returns the URL of the shared test Redis (./scripts/test.sh
// starts it), with database db of its own for the test's package.
func Redis(t testing.TB, db int) string {
	t.Helper()
	addr := os.Getenv("TILEPROXY_TEST_REDIS_ADDR")
	if addr == "" {
		Require(t, "Redis", "TILEPROXY_TEST_REDIS_ADDR is not set")
	}
	return fmt.Sprintf("redis://%s/%d", addr, db)
}

// RedisProcess is a private redis-server that a test may stop and
// restart, for proving what happens when the store goes away.
type RedisProcess struct {
	// URL is redis://127.0.0.1:port/0.
	URL  string
	addr string
	dir  string
	cmd  *exec.Cmd
}

// StartRedis starts a private redis-server on a free loopback port
// (Debian's, from PATH or TILEPROXY_TEST_REDIS_BIN), with its data in an
// append-only file as a production store keeps it, and stops it when the
// test ends.
func StartRedis(t testing.TB) *RedisProcess {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &RedisProcess{URL: "redis://" + addr + "/0", addr: addr, dir: t.TempDir()}
	t.Cleanup(p.Stop)
	p.Start(t)
	return p
}

func redisBin(t testing.TB) string {
	if bin := os.Getenv("TILEPROXY_TEST_REDIS_BIN"); bin != "" {
		return bin
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		Require(t, "redis-server", "it is not installed (apt-get install redis-server)")
	}
	return bin
}

// Start (re)starts the server on its address and waits until it answers.
func (p *RedisProcess) Start(t testing.TB) {
	t.Helper()
	host, port, _ := net.SplitHostPort(p.addr)
	p.cmd = exec.Command(redisBin(t), "--bind", host, "--port", port, "--save", "", "--appendonly", "yes",
		"--dir", p.dir, "--protected-mode", "yes", "--loglevel", "warning")
	var logs SyncBuffer
	p.cmd.Stdout, p.cmd.Stderr = &logs, &logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	for i := 0; i < 300; i++ {
		if c, err := net.DialTimeout("tcp", p.addr, 100*time.Millisecond); err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			c.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("redis-server at %s did not answer:\n%s", p.addr, logs.String())
}

// Stop shuts the server down (SIGTERM: it writes its append-only file
// out), so that Start brings its data back.
func (p *RedisProcess) Stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
		p.cmd = nil
	}
}
