package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"golang.org/x/net/http2"
)

// testCA signs leaf certificates for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tileproxy test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf writes a certificate for 127.0.0.1 with serial and validity, and
// its key, to cert and key (written whole, then renamed into place, as
// certbot and cert-manager do).
func (ca *testCA) leaf(t *testing.T, cert, key string, serial int64, notAfter time.Time) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	for path, block := range map[string]*pem.Block{cert: {Type: "CERTIFICATE", Bytes: der}, key: {Type: "EC PRIVATE KEY", Bytes: kd}} {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
}

// newTestPair is a test CA and a certificate it signed for 127.0.0.1
// (serial), valid an hour, with its key, in a directory of the test's.
func newTestPair(t *testing.T, serial int64) (ca *testCA, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	ca = newTestCA(t)
	cert, key = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.leaf(t, cert, key, serial, time.Now().Add(time.Hour))
	return ca, cert, key
}

func (ca *testCA) client(h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}, ForceAttemptHTTP2: h2, DisableKeepAlives: true}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// tlsYAML is a configuration whose origin is never asked (these tests
// only ask /healthz), with extra.
func tlsYAML(extra string) string {
	return processYAML(strings.Repeat("s", 32), "http://127.0.0.1:1", extra+`
tilesets:
  - {name: a, bucket: tiles-bucket, prefix: a/}
`)
}

// TestTLSAndHTTP2: with tls, HTTP/2 is negotiated by ALPN and HTTP/1.1
// still served; a certificate renewed in place is served from the next
// handshake without a failed request, on change and on SIGHUP; a broken
// new pair is refused and the old one keeps serving.
func TestTLSAndHTTP2(t *testing.T) {
	ca, cert, key := newTestPair(t, 100)
	dir := filepath.Dir(cert)
	s := serveProcess(t, tlsYAML(fmt.Sprintf("tls: {cert_file: %q, key_file: %q}", cert, key)))
	base := strings.Replace(s.base, "http://", "https://", 1)
	get := func(c *http.Client) (*http.Response, error) {
		resp, err := c.Get(base + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	for _, tc := range []struct {
		h2    bool
		proto string
	}{{true, "HTTP/2.0"}, {false, "HTTP/1.1"}} {
		resp, err := get(ca.client(tc.h2))
		if err != nil || resp.StatusCode != 200 || resp.Proto != tc.proto {
			t.Fatalf("h2 %v: %v %v", tc.h2, resp, err)
		}
	}
	// Requests keep coming while the pair is renewed in place.
	var failed, done atomic.Int64
	var serials sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := ca.client(true)
		for i := 0; i < 100_000; i++ { // bounded
			select {
			case <-stop:
				return
			default:
			}
			resp, err := get(c)
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
				continue
			}
			done.Add(1)
			serials.Store(resp.TLS.PeerCertificates[0].SerialNumber.Int64(), true)
		}
	}()
	waitSerial := func(serial int64, what string) {
		for i := 0; ; i++ {
			if _, ok := serials.Load(serial); ok {
				return
			}
			if i == 400 {
				t.Fatalf("%s: serial %d never served", what, serial)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	ca.leaf(t, cert, key, 101, time.Now().Add(time.Hour)) // seen by the file watch
	waitSerial(101, "renewed in place")
	ca.leaf(t, cert, key, 102, time.Now().Add(time.Hour))
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitSerial(102, "SIGHUP")
	// A broken pair: the certificate of one key, the key of another.
	other := filepath.Join(dir, "other.key")
	ca.leaf(t, filepath.Join(dir, "other.crt"), other, 103, time.Now().Add(time.Hour))
	data, _ := os.ReadFile(other)
	os.WriteFile(key, data, 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	before := done.Load()
	for i := 0; done.Load() < before+5; i++ {
		if i == 400 {
			t.Fatal("no answers after a broken pair was refused")
		}
		time.Sleep(25 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed across the swaps", failed.Load(), failed.Load()+done.Load())
	}
	if !strings.Contains(s.logs.String(), "new TLS certificate refused") {
		t.Errorf("the broken pair was not logged:\n%s", s.logs.String())
	}
}

// TestH2C: with h2c, cleartext HTTP/2 is served beside HTTP/1.1, to Go's
// client and to curl, with prior knowledge and by `Upgrade: h2c` (the
// upgrade request answered on stream 1, later requests as streams on the
// same connection); a request with a body is not upgraded.
func TestH2C(t *testing.T) {
	s := serveProcess(t, strings.Replace(tlsYAML("h2c: true"), "access: false", "access: true", 1))
	if curl, err := exec.LookPath("curl"); err == nil {
		for _, tc := range []struct{ flag, want string }{{"--http2-prior-knowledge", "2 200 1,"}, {"--http2", "2 200 1,2 401 0,"}, {"--http1.1", "1.1 200 1,1.1 401 0,"}} {
			// With --http2 the first request upgrades and the second is a
			// stream on the upgraded connection. Prior knowledge takes one:
			// Debian's curl 7.88 fails a reused prior-knowledge connection
			// against any server (curl/curl#10634, fixed in 8.0).
			args := []string{"-sS", "-w", "%{http_version} %{http_code} %{num_connects},", tc.flag, "-o", "/dev/null", s.base + "/healthz"}
			if tc.flag != "--http2-prior-knowledge" {
				args = append(args, "-o", "/dev/null", s.base+"/tiles/a/0/0/0.png")
			}
			out, err := exec.Command(curl, args...).CombinedOutput()
			if err != nil || string(out) != tc.want {
				t.Errorf("curl %s: %q %v, want %q", tc.flag, out, err, tc.want)
			}
		}
	} else {
		testenv.Require(t, "curl", "it is not installed")
	}
	// By hand: the upgrade request is answered on stream 1, and the
	// access line says HTTP/2.0.
	h := upgradeH2(t, s.base, 0, "/tiles/a/0/0/1.png?by=upgrade")
	status := ""
	for status == "" {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if f, ok := f.(*http2.MetaHeadersFrame); ok && f.StreamID == 1 {
			status = f.PseudoValue("status")
		}
	}
	if status != "401" {
		t.Errorf("upgraded stream 1: %s, want 401 (no token)", status)
	}
	for i := 0; !strings.Contains(s.logs.String(), "path=/tiles/a/0/0/1.png"); i++ {
		if i == 200 {
			t.Fatalf("no access line:\n%s", s.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, l := range strings.Split(s.logs.String(), "\n") {
		if strings.Contains(l, "path=/tiles/a/0/0/1.png") && !strings.Contains(l, "proto=HTTP/2.0") {
			t.Errorf("access line of the upgrade: %s", l)
		}
	}
	// A request with a body is not upgraded: it stays HTTP/1.1.
	c, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\nContent-Length: 2\r\n\r\n{}")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.Proto != "HTTP/1.1" || resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatalf("Upgrade: h2c with a body: %v %v, want an HTTP/1.1 answer", resp, err)
	}
	resp.Body.Close()
	for _, h2c := range []bool{true, false} {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		if h2c {
			tr.Protocols.SetUnencryptedHTTP2(true)
		} else {
			tr.Protocols.SetHTTP1(true)
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(s.base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]string{true: "HTTP/2.0", false: "HTTP/1.1"}[h2c]; resp.Proto != want || resp.StatusCode != 200 {
			t.Errorf("h2c %v: %s %d", h2c, resp.Proto, resp.StatusCode)
		}
	}
}

// TestCheckTLS: check refuses unreadable, mismatched and expired pairs,
// naming the file.
func TestCheckTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	good, goodKey := filepath.Join(dir, "good.crt"), filepath.Join(dir, "good.key")
	ca.leaf(t, good, goodKey, 1, time.Now().Add(time.Hour))
	old, oldKey := filepath.Join(dir, "old.crt"), filepath.Join(dir, "old.key")
	ca.leaf(t, old, oldKey, 2, time.Now().Add(-time.Minute))
	for _, tc := range []struct {
		cert, key, want string
	}{
		{good, goodKey, ""},
		{filepath.Join(dir, "missing.crt"), goodKey, "missing.crt"},
		{good, oldKey, "good.crt and " + oldKey},
		{old, oldKey, "old.crt: expired"},
	} {
		path := filepath.Join(dir, "tileproxy.yaml")
		os.WriteFile(path, []byte(tlsYAML(fmt.Sprintf("tls: {cert_file: %q, key_file: %q}", tc.cert, tc.key))), 0o600)
		var out, errb bytes.Buffer
		rc := run([]string{"check", "-config", path}, &out, &errb)
		if (tc.want == "") != (rc == 0) || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%s + %s: exit %d, %q; want %q", filepath.Base(tc.cert), filepath.Base(tc.key), rc, errb.String(), tc.want)
		}
	}
}

// TestHAProxyH2Backend: HAProxy speaks HTTP/2 to the replica, as
// docs/scale-out.md shows: cleartext to an h2c replica (`proto h2`), and
// over TLS by ALPN to a tls replica, verifying its certificate; the
// replica's access line says each request came as HTTP/2.
func TestHAProxyH2Backend(t *testing.T) {
	ca, cert, key := newTestPair(t, 1)
	caFile := filepath.Join(filepath.Dir(cert), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600)
	for _, tc := range []struct{ name, extra, opts string }{
		{"h2c", "h2c: true", "proto h2"},
		{"tls", fmt.Sprintf("tls: {cert_file: %q, key_file: %q}", cert, key), "ssl verify required ca-file " + caFile + " alpn h2 check-alpn http/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serveProcess(t, strings.Replace(tlsYAML(tc.extra), "access: false", "access: true", 1))
			front := startHAProxy(t, "    balance roundrobin", []*served{s}, tc.opts)
			for range 3 {
				resp, err := http.Get(front + "/tiles/a/0/0/0.png")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 401 {
					t.Errorf("through HAProxy: %d, want 401 (no token)", resp.StatusCode)
				}
			}
			for i := 0; !strings.Contains(s.logs.String(), "path=/tiles/a/0/0/0.png status=401"); i++ {
				if i == 200 {
					t.Fatalf("no access line:\n%s", s.logs.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			for _, l := range strings.Split(s.logs.String(), "\n") {
				if strings.Contains(l, "path=/tiles/") && !strings.Contains(l, "proto=HTTP/2.0") { // health checks are HTTP/1.0
					t.Errorf("HAProxy did not speak HTTP/2 to the replica: %s", l)
				}
			}
		})
	}
}

// TestMetricsTLS: metrics_tls puts the metrics listener on TLS of its
// own, with its own pair, beside a cleartext main listener; a cleartext
// scrape is refused there.
func TestMetricsTLS(t *testing.T) {
	ca, cert, key := newTestPair(t, 7)
	yaml := strings.Replace(tlsYAML(fmt.Sprintf("metrics_tls: {cert_file: %q, key_file: %q}", cert, key)),
		`metrics_listen: ""`, fmt.Sprintf("metrics_listen: %q", freeAddr(t)), 1)
	s := serveProcess(t, yaml)
	var addr string
	for i := 0; addr == ""; i++ {
		if _, rest, ok := strings.Cut(s.logs.String(), `"metrics listening" addr=`); ok {
			addr = strings.Fields(rest)[0]
		} else if i == 200 {
			t.Fatalf("no metrics listener:\n%s", s.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := ca.client(true).Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "tileproxy_build_info") || resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 7 {
		t.Errorf("scrape over TLS: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("a cleartext scrape of the TLS metrics listener was answered")
		}
	}
	if resp, err := http.Get(s.base + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("the main listener stays cleartext: %v %v", resp, err)
	}
}
