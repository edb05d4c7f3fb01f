// Package certs holds a listener's TLS certificate: loaded and checked at
// start, swapped in place when its files change (cert-manager and certbot
// renew them there) or on SIGHUP; a broken new pair is refused with a log
// line and the pair in force keeps serving. Handshakes read the pair in
// force through tls.Config.GetCertificate, so a swap never drops a
// connection.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// PollEvery is how often the files are looked at.
const PollEvery = 2 * time.Second

// Load reads and checks a pair: readable, the key matching the
// certificate, and the certificate valid now. Errors name the file.
func Load(certFile, keyFile string, now time.Time) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("key_file: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", certFile, keyFile, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("cert_file %s: %w", certFile, err)
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("cert_file %s: expired %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("cert_file %s: not valid before %s", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	pair.Leaf = leaf
	return &pair, nil
}

// Reloader is one listener's certificate.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger

	cur atomic.Pointer[tls.Certificate]

	mu    sync.Mutex // one reload at a time; guards seen
	seen  [2]fileStat
	state string // what the last reload said, so a broken file is logged once
}

type fileStat struct {
	mod  time.Time
	size int64
}

// New loads the pair; an error refuses to start.
func New(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log}
	c, err := Load(certFile, keyFile, time.Now())
	if err != nil {
		return nil, err
	}
	r.cur.Store(c)
	r.seen = r.stat()
	return r, nil
}

// GetCertificate is tls.Config.GetCertificate: the pair in force.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// Leaf is the certificate in force.
func (r *Reloader) Leaf() *x509.Certificate { return r.cur.Load().Leaf }

// Config is a server tls.Config serving the pair in force, TLS 1.2 or
// 1.3 at least (minVersion "1.3"), HTTP/2 and HTTP/1.1 by ALPN.
func (r *Reloader) Config(minVersion string) *tls.Config {
	v := uint16(tls.VersionTLS12)
	if minVersion == "1.3" {
		v = tls.VersionTLS13
	}
	return &tls.Config{MinVersion: v, GetCertificate: r.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
}

// Reload reads the pair again and swaps it in if it is good; a broken
// pair is refused and the one in force stays.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked()
}

func (r *Reloader) reloadLocked() error {
	r.seen = r.stat()
	c, err := Load(r.certFile, r.keyFile, time.Now())
	if err != nil {
		if msg := err.Error(); msg != r.state {
			r.log.Error("new TLS certificate refused; the one in force keeps serving", "err", err,
				"serving_until", r.cur.Load().Leaf.NotAfter.UTC().Format(time.RFC3339))
			r.state = msg
		}
		return err
	}
	old := r.cur.Swap(c)
	r.state = ""
	if old == nil || !old.Leaf.Equal(c.Leaf) {
		r.log.Info("TLS certificate loaded", "file", r.certFile, "subject", c.Leaf.Subject.String(),
			"not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

func (r *Reloader) stat() [2]fileStat {
	var out [2]fileStat
	for i, p := range []string{r.certFile, r.keyFile} {
		if fi, err := os.Stat(p); err == nil {
			out[i] = fileStat{fi.ModTime(), fi.Size()}
		}
	}
	return out
}

// Run reloads when either file changes, until ctx ends. A renewal that
// writes the two files one after the other is seen as one change or two;
// a half-written pair is refused until the other half lands.
func (r *Reloader) Run(ctx context.Context) {
	t := time.NewTicker(PollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		if st := r.stat(); st != r.seen {
			r.reloadLocked()
		}
		r.mu.Unlock()
	}
}
