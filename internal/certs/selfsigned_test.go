package certs

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSelfSigned: a throwaway pair loads as a good pair for its hosts,
// and its key hash is stable, differs between pairs, and is refused for a
// file that holds no certificate.
func TestSelfSigned(t *testing.T) {
	dir := t.TempDir()
	hashes := map[string]bool{}
	for _, name := range []string{"a", "b"} {
		cert, key := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if err := WriteSelfSigned(cert, key, []string{"127.0.0.1", "localhost"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		c, err := Load(cert, key, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Leaf.VerifyHostname("127.0.0.1"); err != nil {
			t.Error(err)
		}
		if err := c.Leaf.VerifyHostname("localhost"); err != nil {
			t.Error(err)
		}
		h1, err := KeyHash(cert)
		h2, _ := KeyHash(cert)
		if err != nil || h1 != h2 || len(h1) != 44 {
			t.Fatalf("key hash %q, again %q (%v)", h1, h2, err)
		}
		hashes[h1] = true
		if _, err := KeyHash(key); err == nil {
			t.Error("a key file gave a certificate's hash")
		}
	}
	if len(hashes) != 2 {
		t.Error("two pairs, one key hash")
	}
	os.WriteFile(filepath.Join(dir, "junk"), []byte("junk"), 0o600)
	if _, err := KeyHash(filepath.Join(dir, "junk")); err == nil {
		t.Error("junk gave a key hash")
	}
}
