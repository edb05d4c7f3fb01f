package revoke

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/internal/store"
)

func TestParse(t *testing.T) {
	s, err := parse([]byte("# revoked\n\nsub - alice\nsub https://idp.example/ bob\njti 123e4567\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		iss, sub, jti string
		want          bool
	}{
		{"", "alice", "", true},
		{"https://other/", "alice", "", false}, // another issuer's alice
		{"https://idp.example/", "bob", "x", true},
		{"", "bob", "", false},
		{"", "carol", "123e4567", true},
		{"", "carol", "", false},
		{"", "", "", false},
	} {
		if got := s.has(tc.iss, tc.sub, tc.jti); got != tc.want {
			t.Errorf("has(%q, %q, %q) = %v, want %v", tc.iss, tc.sub, tc.jti, got, tc.want)
		}
	}
	for _, bad := range []string{"sub alice", "jti", "jti a b", "user - alice", "sub - alice extra"} {
		if _, err := parse([]byte("sub - ok\n" + bad + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: %v, want an error naming line 2", bad, err)
		}
	}
}

func TestFileReloadedWhenChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revoked.txt")
	os.WriteFile(path, []byte("sub - alice\n"), 0o600)
	l, err := New(path, Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if !l.Revoked("", "alice", "") || l.Revoked("", "bob", "") {
		t.Fatal("the file's entries are not what is revoked")
	}
	os.WriteFile(path, []byte("sub - bob\n"), 0o600)
	os.Chtimes(path, time.Now().Add(time.Second), time.Now().Add(time.Second))
	l.Poll(t.Context())
	if l.Revoked("", "alice", "") || !l.Revoked("", "bob", "") {
		t.Fatal("a changed file was not read again")
	}
	// A broken edit keeps what was in force.
	os.WriteFile(path, []byte("sub bob\n"), 0o600)
	os.Chtimes(path, time.Now().Add(2*time.Second), time.Now().Add(2*time.Second))
	l.Poll(t.Context())
	if !l.Revoked("", "bob", "") {
		t.Fatal("a broken file dropped the revocations in force")
	}
	if _, err := New(filepath.Join(t.TempDir(), "missing.txt"), Deps{}); err == nil {
		t.Error("a missing file was accepted")
	}
}

// shared is a Memory store that says it is shared, as Redis is.
type shared struct{ *store.Memory }

func (shared) Shared() bool { return true }

func TestStoreRevocations(t *testing.T) {
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	st := shared{store.NewMemory(func() time.Time { return now })}
	l, err := New("", Deps{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l.Poll(t.Context())
	if l.Revoked("", "alice", "") {
		t.Fatal("revoked before anything was")
	}
	st.Revoke(t.Context(), Sub("", "alice"), now.Add(time.Hour))
	st.Revoke(t.Context(), JTI("t-1"), now.Add(time.Hour))
	l.Poll(t.Context())
	if !l.Revoked("", "alice", "") || !l.Revoked("iss", "x", "t-1") {
		t.Fatal("the store's revocations are not in force after a poll")
	}
}
