package coalesce

import (
	"io"
	"os"
)

// ReadFrom is what net/http hands a response body to when a handler
// copies one into its ResponseWriter (io.Copy, http.ServeContent). A
// section of a file (an *io.SectionReader over an *os.File, perhaps under
// an *io.LimitedReader, as http.ServeContent makes) goes out with
// sendfile(2) where the system has it: the kernel sends the file's pages
// by reference instead of copying the body from user memory, and what is
// held (the response header) leaves ahead of it in the same segment train.
// Anything else is copied through Write.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if s, ok := fileSection(r); ok && s.n > 0 {
		sent, handled, err := c.sendFile(s.f, s.off, s.n)
		if handled {
			s.advance(sent)
			return sent, err
		}
	}
	bp := c.l.copyBufs.Get().(*[]byte)
	defer c.l.copyBufs.Put(bp)
	return io.CopyBuffer(writerOnly{c}, r, *bp)
}

// writerOnly hides ReadFrom, so io.CopyBuffer does not come back to it.
type writerOnly struct{ io.Writer }

// section is where a reader's remaining bytes sit in a file.
type section struct {
	f      *os.File
	off, n int64
	sr     *io.SectionReader
	lr     *io.LimitedReader // nil unless r was one
}

func fileSection(r io.Reader) (section, bool) {
	var s section
	if lr, ok := r.(*io.LimitedReader); ok {
		s.lr, r = lr, lr.R
	}
	sr, ok := r.(*io.SectionReader)
	if !ok {
		return s, false
	}
	ra, base, size := sr.Outer()
	f, ok := ra.(*os.File)
	if !ok {
		return s, false
	}
	pos, err := sr.Seek(0, io.SeekCurrent)
	if err != nil {
		return s, false
	}
	s.f, s.sr, s.off, s.n = f, sr, base+pos, max(size-pos, 0)
	if s.lr != nil {
		s.n = min(s.n, max(s.lr.N, 0))
	}
	return s, true
}

// advance moves the readers past what was sent, as a copy would have.
func (s section) advance(n int64) {
	s.sr.Seek(n, io.SeekCurrent)
	if s.lr != nil {
		s.lr.N -= n
	}
}
