package coalesce

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// sender is a connection's sendfile state, made on its first send: the
// socket's and the file's RawConns and the two callbacks they run are
// built once per connection (a cache hands every send the same file), not
// once per response.
type sender struct {
	rc      syscall.RawConn // the socket
	f       *os.File        // the file fc is for
	fc      syscall.RawConn
	control func(ffd uintptr)
	write   func(sfd uintptr) bool

	// The send in progress, read and written by the callbacks.
	held   []byte
	ffd    int
	off, n int64
	sent   int64
	ran    bool
	err    error
}

// newSender is nil when c is not a socket sendfile can write to.
func newSender(c net.Conn) *sender {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &sender{rc: rc}
	s.write = s.writeSome
	s.control = func(ffd uintptr) {
		s.ran, s.ffd = true, int(ffd)
		if werr := s.rc.Write(s.write); s.err == nil {
			s.err = werr
		}
	}
	return s
}

// writeSome sends the held bytes, then the file section, until the
// socket would block (false: the poller waits, under the deadline) or
// all is sent or fails (true).
func (s *sender) writeSome(sfd uintptr) bool {
	for len(s.held) > 0 || s.sent < s.n {
		var (
			m        int
			err      error
			op       = "sendmsg"
			fromFile = len(s.held) == 0
		)
		if !fromFile {
			// MSG_MORE: the header waits for the body's first pages, so
			// they leave in one segment as a writev would.
			m, err = syscall.SendmsgN(int(sfd), s.held, nil, nil, syscall.MSG_MORE)
		} else {
			op = "sendfile"
			o := s.off + s.sent
			m, err = syscall.Sendfile(int(sfd), s.ffd, &o, int(min(s.n-s.sent, 1<<30)))
			s.sent += int64(max(m, 0))
		}
		switch s.judge(op, err) {
		case again:
			continue
		case wait:
			return false
		case stop:
			return true
		}
		switch {
		case !fromFile:
			s.held = s.held[m:]
		case m == 0:
			s.err = io.ErrUnexpectedEOF // the file is shorter than the section
			return true
		}
	}
	return true
}

// What writeSome does after a system call.
const (
	goOn  = iota // it went through
	again        // interrupted: call again
	wait         // the socket is full: wait for the poller
	stop         // failed: s.err says why
)

func (s *sender) judge(op string, err error) int {
	switch {
	case err == nil:
		return goOn
	case errors.Is(err, syscall.EINTR):
		return again
	case errors.Is(err, syscall.EAGAIN):
		return wait
	}
	s.err = os.NewSyscallError(op, err)
	return stop
}

// sendFile sends what is held, then n bytes of f from off, with the
// connection's deadline and poller. handled is false when it could not
// start (not a socket, or f not usable); then nothing was sent.
func (c *conn) sendFile(f *os.File, off, n int64) (sent int64, handled bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sf == nil {
		if c.sf = newSender(c.Conn); c.sf == nil {
			c.sf = &sender{} // not a socket: remember, and always copy
		}
	}
	s := c.sf
	if s.rc == nil {
		return 0, false, nil
	}
	if s.f != f {
		fc, err := f.SyscallConn()
		if err != nil {
			return 0, false, nil
		}
		s.f, s.fc = f, fc
	}
	if c.err != nil {
		return 0, true, c.err
	}
	s.held, s.off, s.n, s.sent, s.ran, s.err = nil, off, n, 0, false, nil
	if c.held != nil {
		s.held = *c.held
	}
	if c.l.onSendfile != nil {
		c.l.onSendfile(n)
	}
	// Control keeps f's descriptor open (and its number not reused) until
	// the send is done, even if f is closed meanwhile.
	cerr := s.fc.Control(s.control)
	sent, err = s.sent, s.err
	s.held = nil // the buffer goes back to the pool below
	if !s.ran {
		return 0, false, nil // f is closed: the copy fallback will say so
	}
	if cerr != nil && err == nil {
		err = cerr
	}
	if c.held != nil {
		c.release() // sent, or c.err is set and nothing more will be
	}
	c.err = err
	return sent, true, err
}
