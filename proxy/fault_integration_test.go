package proxy_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFaultsBetweenProxyAndMinIO puts a TCP fault proxy between tileproxy
// and MinIO and checks each fault's answer, and that nothing is left
// behind: goroutines and origin connections return to where they were.
func TestFaultsBetweenProxyAndMinIO(t *testing.T) {
	env := testenv.MinIO(t)
	bucket := env.Bucket(t)
	big := make([]byte, 3<<20)
	rand.Read(big)
	env.Put(t, bucket, map[string]testenv.Object{
		"a/0/0/0.png": {Body: []byte("tile"), ContentType: "image/png"},
		"a/big.bin":   {Body: big},
	})
	fp := testenv.NewFaultProxy(t, strings.TrimPrefix(env.Endpoint, "http://"))
	const timeout = 700 * time.Millisecond
	st := newStack(t, fp.URL(), env.AccessKey, env.SecretKey,
		[]config.Tileset{{Name: "a", Bucket: bucket, Prefix: "a/"}}, stackOpts{timeout: timeout})
	url := st.srv.URL + "/tiles/a/0/0/0.png"
	bearer := map[string]string{"Authorization": "Bearer " + hmacToken(t, time.Hour, "a")}
	status := func() int { resp, _ := get(t, url, bearer); return resp.StatusCode }

	if got := status(); got != 200 {
		t.Fatalf("pass: %d", got)
	}
	t.Run("reset: 502, then recovery without restart", func(t *testing.T) {
		fp.Set(testenv.Reset, 0)
		if got := status(); got != 502 {
			t.Fatalf("origin resetting: %d, want 502", got)
		}
		fp.Set(testenv.Pass, 0)
		eventually(t, "recovery", func() bool { return status() == 200 })
	})
	t.Run("black hole: 504 after the timeout, nothing left behind", func(t *testing.T) {
		goroutines, open := runtime.NumGoroutine(), fp.Open()
		fp.Set(testenv.Blackhole, 0)
		var wg sync.WaitGroup
		codes := make(chan int, 10)
		for range 10 {
			wg.Add(1)
			go func() { defer wg.Done(); codes <- status() }()
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != 504 {
				t.Errorf("hung origin: %d, want 504", c)
			}
		}
		fp.Set(testenv.Pass, 0)
		eventually(t, "origin connections released", func() bool { return fp.Open() <= open })
		eventually(t, "goroutines released", func() bool { return runtime.NumGoroutine() <= goroutines+5 })
		if got := status(); got != 200 {
			t.Fatalf("after the black hole: %d", got)
		}
	})
	t.Run("latency under the timeout is only slow", func(t *testing.T) {
		fp.Set(testenv.Latency, 200*time.Millisecond)
		defer fp.Set(testenv.Pass, 0)
		if got := status(); got != 200 {
			t.Fatalf("with latency: %d", got)
		}
	})
	t.Run("slow body streams; a client leaving releases the origin connection", func(t *testing.T) {
		fp.Set(testenv.SlowBody, 0)
		defer fp.Set(testenv.Pass, 0)
		req, _ := http.NewRequest("GET", st.srv.URL+"/tiles/a/big.bin", nil)
		req.Header.Set("Authorization", bearer["Authorization"])
		req.Header.Set("Range", "bytes=0-20000")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 206 || !bytes.Equal(got, big[:20001]) {
			t.Fatalf("slow ranged body: %d, %d bytes", resp.StatusCode, len(got))
		}
		open := fp.Open()
		req, _ = http.NewRequest("GET", st.srv.URL+"/tiles/a/big.bin", nil)
		req.Header.Set("Authorization", bearer["Authorization"])
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.CopyN(io.Discard, resp.Body, 8<<10)
		resp.Body.Close() // leaves mid-body; the 3 MiB would take ~2 min at this pace
		eventually(t, "origin connection of the abandoned stream released", func() bool { return fp.Open() <= open })
	})
}
