// Command tilegen writes the sample tileset and test keys into testdata/.
// Run it with `go generate ./internal/tilegen`.
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tileproxy/tileproxy/internal/tilegen"
)

func main() {
	out := flag.String("out", "testdata", "testdata directory")
	maxZoom := flag.Int("maxzoom", 3, "highest raster zoom")
	newKeys := flag.Bool("keys", false, "write fresh test keys even if present")
	flag.Parse()
	if err := run(*out, *maxZoom, *newKeys); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out string, maxZoom int, newKeys bool) error {
	tiles, err := tilegen.Set(maxZoom)
	if err != nil {
		return err
	}
	for _, t := range tiles {
		p := filepath.Join(out, "tiles", filepath.FromSlash(t.Key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, t.Body, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("gen: %d tiles in %s\n", len(tiles), filepath.Join(out, "tiles"))
	keys := filepath.Join(out, "keys")
	if _, err := os.Stat(filepath.Join(keys, "rsa.pub.pem")); err == nil && !newKeys {
		return nil
	}
	return writeKeys(keys)
}

// writeKeys writes throwaway key pairs for tests. They sign nothing real.
func writeKeys(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	for name, k := range map[string]interface {
		Public() any
	}{"rsa": publicer{rk}, "ec": publicer{ek}, "ed25519": publicer{dk}} {
		priv, err := x509.MarshalPKCS8PrivateKey(k.(publicer).key)
		if err != nil {
			return err
		}
		pub, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".pub.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("gen: test keys in %s\n", dir)
	return nil
}

type publicer struct{ key any }

func (p publicer) Public() any {
	switch k := p.key.(type) {
	case *rsa.PrivateKey:
		return k.Public()
	case *ecdsa.PrivateKey:
		return k.Public()
	case ed25519.PrivateKey:
		return k.Public()
	}
	return nil
}
