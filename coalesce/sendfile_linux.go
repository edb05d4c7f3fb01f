package coalesce

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// sendFile sends what is held, then n bytes of f from off, with the
// connection's deadline and poller. handled is false when it could not
// start (not a socket, or f not usable); then nothing was sent.
func (c *conn) sendFile(f *os.File, off, n int64) (sent int64, handled bool, err error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return 0, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	fc, err := f.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, true, c.err
	}
	var held []byte
	if c.held != nil {
		held = *c.held
	}
	var serr error
	ran := false
	// Control keeps f's descriptor open (and its number not reused) until
	// the send is done, even if f is closed meanwhile.
	cerr := fc.Control(func(ffd uintptr) {
		ran = true
		if c.l.onSendfile != nil {
			c.l.onSendfile(n)
		}
		werr := rc.Write(func(sfd uintptr) bool {
			for len(held) > 0 {
				// MSG_MORE: the header waits for the body's first
				// pages, so they leave in one segment as a writev would.
				m, err := syscall.SendmsgN(int(sfd), held, nil, nil, syscall.MSG_MORE)
				switch {
				case errors.Is(err, syscall.EINTR):
					continue
				case errors.Is(err, syscall.EAGAIN):
					return false // wait until writable, under the deadline
				case err != nil:
					serr = os.NewSyscallError("sendmsg", err)
					return true
				}
				held = held[m:]
			}
			for sent < n {
				o := off + sent
				m, err := syscall.Sendfile(int(sfd), int(ffd), &o, int(min(n-sent, 1<<30)))
				if m > 0 {
					sent += int64(m)
				}
				switch {
				case errors.Is(err, syscall.EINTR):
					continue
				case errors.Is(err, syscall.EAGAIN):
					return false
				case err != nil:
					serr = os.NewSyscallError("sendfile", err)
					return true
				case m == 0:
					serr = io.ErrUnexpectedEOF // the file is shorter than the section
					return true
				}
			}
			return true
		})
		if serr == nil {
			serr = werr
		}
	})
	if !ran {
		return 0, false, nil // f is closed: the copy fallback will say so
	}
	if cerr != nil && serr == nil {
		serr = cerr
	}
	if c.held != nil {
		c.release() // sent, or c.err is set and nothing more will be
	}
	c.err = serr
	return sent, true, serr
}
