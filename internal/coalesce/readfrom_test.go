package coalesce

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pair is a wrapped server connection and its client over loopback TCP;
// sends counts sections that went out with sendfile.
func pair(t *testing.T) (srv *conn, cli net.Conn, sends *atomic.Int64) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	ln, err := NewListener(Config{}, tcp)
	if err != nil {
		t.Fatal(err)
	}
	sends = new(atomic.Int64)
	ln.onSendfile = func(int64) { sends.Add(1) }
	cli, err = net.Dial("tcp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*conn), cli, sends
}

// tempFile holds data.
func tempFile(t *testing.T, data []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestReadFromSections sends the header held back, then a reader, and
// checks what the client receives, whether sendfile carried it, and that
// the reader was consumed as a copy would have consumed it.
func TestReadFromSections(t *testing.T) {
	data := randomBytes(8 << 20)
	f := tempFile(t, data)
	linux := runtime.GOOS == "linux"
	for _, tc := range []struct {
		name     string
		src      func() io.Reader
		want     []byte
		sendfile bool
	}{
		{"whole small section", func() io.Reader { return io.NewSectionReader(f, 100, 20000) }, data[100:20100], linux},
		{"section partly read", func() io.Reader {
			sr := io.NewSectionReader(f, 1000, 5000)
			io.CopyN(io.Discard, sr, 512) // as net/http does before ReadFrom when headers are unwritten
			return sr
		}, data[1512:6000], linux},
		{"limited section (ServeContent)", func() io.Reader {
			return &io.LimitedReader{R: io.NewSectionReader(f, 0, int64(len(data))), N: 3000}
		}, data[:3000], linux},
		{"8 MiB: more than the socket takes at once", func() io.Reader { return io.NewSectionReader(f, 0, int64(len(data))) }, data, linux},
		{"not a file", func() io.Reader { return bytes.NewReader(data[:30000]) }, data[:30000], false},
		{"section of memory", func() io.Reader { return io.NewSectionReader(bytes.NewReader(data), 7, 30000) }, data[7:30007], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli, sends := pair(t)
			src := tc.src()
			srv.Write([]byte("HEADER\r\n"))
			done := make(chan error, 1)
			var n int64
			go func() {
				var err error
				n, err = srv.ReadFrom(src)
				done <- err
			}()
			cli.SetReadDeadline(time.Now().Add(time.Minute)) // bounds a hang only
			got := make([]byte, 8+len(tc.want))
			if _, err := io.ReadFull(cli, got); err != nil {
				t.Fatalf("client read: %v", err)
			}
			if err := <-done; err != nil || n != int64(len(tc.want)) {
				t.Fatalf("ReadFrom = %d, %v; want %d, nil", n, err, len(tc.want))
			}
			if string(got[:8]) != "HEADER\r\n" || !bytes.Equal(got[8:], tc.want) {
				t.Fatalf("client got %d bytes that differ from what was sent", len(got))
			}
			if used := sends.Load() > 0; used != tc.sendfile {
				t.Errorf("sendfile used: %v; want %v", used, tc.sendfile)
			}
			if rest, _ := io.Copy(io.Discard, src); rest != 0 {
				t.Errorf("the reader has %d bytes left; ReadFrom must consume what it sent", rest)
			}
		})
	}
}

// TestReadFromDeadline: sendfile waits for the socket under the write
// deadline like Write does, and a failure sticks.
func TestReadFromDeadline(t *testing.T) {
	srv, _, sends := pair(t) // the client never reads
	f := tempFile(t, randomBytes(32<<20))
	srv.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := srv.ReadFrom(io.NewSectionReader(f, 0, 32<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom to a client that does not read = %d, %v; want the deadline error", n, err)
	}
	if runtime.GOOS == "linux" && sends.Load() != 1 {
		t.Errorf("%d sendfile sections; want 1", sends.Load())
	}
	if _, err := srv.Write([]byte("x")); err == nil {
		t.Error("a write after the failed send succeeded; want the error to stick")
	}
}

// TestServeContentSendfile runs net/http's own paths (io.Copy after
// Flush, and http.ServeContent with Range) over wrapped connections.
func TestServeContentSendfile(t *testing.T) {
	data := randomBytes(100_000)
	f := tempFile(t, data)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := NewListener(Config{}, tcp)
	if err != nil {
		t.Fatal(err)
	}
	var sends atomic.Int64
	ln.onSendfile = func(int64) { sends.Add(1) }
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sr := io.NewSectionReader(f, 1000, 50_000)
		if r.URL.Path == "/content" {
			http.ServeContent(w, r, "", time.Time{}, sr)
			return
		}
		w.Header().Set("Content-Length", "50000")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.(http.Flusher).Flush() // headers out (held), so ReadFrom starts at once
		io.Copy(w, sr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + tcp.Addr().String()
	for _, tc := range []struct {
		path, rng string
		code      int
		want      []byte
		sendfile  bool
	}{
		{"/copy", "", 200, data[1000:51000], true},
		{"/copy", "", 200, data[1000:51000], true}, // keep-alive: a second on the same connection
		{"/content", "", 200, data[1000:51000], true},
		{"/content", "bytes=100-20099", 206, data[1100:21100], true},
		// net/http copies the first 512 bytes itself (to sniff a type)
		// when the header is not out yet; this is all of them.
		{"/content", "bytes=-10", 206, data[50990:51000], false},
	} {
		req, _ := http.NewRequest("GET", base+tc.path, nil)
		if tc.rng != "" {
			req.Header.Set("Range", tc.rng)
		}
		before := sends.Load()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.code || !bytes.Equal(b, tc.want) {
			t.Fatalf("%s %s: %d, %d bytes, %v; want %d and %d bytes", tc.path, tc.rng, resp.StatusCode, len(b), err, tc.code, len(tc.want))
		}
		if used := sends.Load() > before; used != (tc.sendfile && runtime.GOOS == "linux") {
			t.Errorf("%s %s: sendfile used: %v", tc.path, tc.rng, used)
		}
	}
}

// TestReadFromStream: a body that is not a file (an origin stream) is
// copied intact, in pieces of any size.
func TestReadFromStream(t *testing.T) {
	srv, cli, sends := pair(t)
	data := randomBytes(200_000)
	srv.Write([]byte("H"))
	go func() {
		srv.ReadFrom(io.MultiReader(bytes.NewReader(data[:3]), strings.NewReader(string(data[3:]))))
		srv.Close()
	}()
	got, err := io.ReadAll(cli)
	if err != nil || string(got) != "H"+string(data) || sends.Load() != 0 {
		t.Fatalf("got %d bytes, %v, %d sendfiles; want %d bytes by copy", len(got), err, sends.Load(), len(data)+1)
	}
}
