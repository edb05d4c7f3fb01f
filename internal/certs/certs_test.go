package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// writePair writes a self-signed pair with serial to cert and key.
func writePair(t *testing.T, cert, key string, serial int64, notAfter time.Time) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
}

// TestReload: handshakes read the pair in force while reloads swap it
// (-race); a broken pair is refused and the one in force stays.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	writePair(t, cert, key, 1, time.Now().Add(time.Hour))
	r, err := New(cert, key, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if c, _ := r.GetCertificate(nil); c == nil || c.Leaf == nil {
				t.Error("no certificate during a reload")
				return
			}
		}
	}()
	for serial := int64(2); serial <= 20; serial++ {
		writePair(t, cert, key, serial, time.Now().Add(time.Hour))
		if err := r.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if got := r.Leaf().SerialNumber.Int64(); got != 20 {
		t.Fatalf("serving serial %d after reloads, want 20", got)
	}
	writePair(t, cert, filepath.Join(dir, "other.pem"), 21, time.Now().Add(time.Hour)) // the key no longer matches
	if err := r.Reload(); err == nil {
		t.Fatal("a mismatched pair was accepted")
	}
	writePair(t, cert, key, 22, time.Now().Add(-time.Minute)) // expired
	if err := r.Reload(); err == nil {
		t.Fatal("an expired certificate was accepted")
	}
	if got := r.Leaf().SerialNumber.Int64(); got != 20 {
		t.Errorf("serving serial %d after refused pairs, want 20", got)
	}
}
