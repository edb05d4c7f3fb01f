// Package revoke holds the revoked subjects and token IDs that the
// verifier refuses (docs/exfiltration.md): from revocation.file, read
// again when it changes and on SIGHUP, and from the shared limits store,
// written by `tileproxy revoke` and polled by every replica.
package revoke

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tileproxy/tileproxy/internal/store"
)

// PollEvery is how often the store and the file are looked at: a
// revocation written to the store reaches every replica within it (and
// the store's round trip).
const PollEvery = 250 * time.Millisecond

// SelfIssued is the issuer field of a self-issued token's subject.
const SelfIssued = "-"

// Sub is the entry that revokes every token of subject sub from issuer
// iss ("" for self-issued tokens).
func Sub(iss, sub string) string {
	if iss == "" {
		iss = SelfIssued
	}
	return "sub " + iss + " " + sub
}

// JTI is the entry that revokes the token with ID jti.
func JTI(jti string) string { return "jti " + jti }

// set is one list of revocations, looked up without building strings.
type set struct {
	subs map[[2]string]struct{} // {issuer ("" self-issued), subject}
	jtis map[string]struct{}
}

func (s *set) empty() bool { return s == nil || len(s.subs)+len(s.jtis) == 0 }

func (s *set) has(iss, sub, jti string) bool {
	if s.empty() {
		return false
	}
	if sub != "" {
		if _, ok := s.subs[[2]string{iss, sub}]; ok {
			return true
		}
	}
	_, ok := s.jtis[jti]
	return ok && jti != ""
}

// parse reads entries, one a line: "sub <iss> <sub>" ("-" for
// self-issued), "jti <jti>"; blank lines and lines starting with # are
// skipped. An error names the line.
func parse(data []byte) (*set, error) {
	s := &set{subs: map[[2]string]struct{}{}, jtis: map[string]struct{}{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<10)
	for n := 1; sc.Scan(); n++ {
		if err := s.add(sc.Text()); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// ErrBadEntry: a line is neither "sub <iss> <sub>" nor "jti <jti>".
var ErrBadEntry = errors.New(`want "sub <iss> <sub>" (iss "-" for self-issued tokens) or "jti <jti>"`)

func (s *set) add(line string) error {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return nil
	}
	f := strings.Fields(line)
	switch {
	case len(f) == 3 && f[0] == "sub":
		iss := f[1]
		if iss == SelfIssued {
			iss = ""
		}
		s.subs[[2]string{iss, f[2]}] = struct{}{}
	case len(f) == 2 && f[0] == "jti":
		s.jtis[f[1]] = struct{}{}
	default:
		return ErrBadEntry
	}
	return nil
}

// Check validates one entry, as `tileproxy revoke` writes it.
func Check(entry string) error {
	return (&set{subs: map[[2]string]struct{}{}, jtis: map[string]struct{}{}}).add(entry)
}

// Deps are what a List works with.
type Deps struct {
	// Store is the shared store; revocations are polled from it when it
	// is Shared.
	Store store.Store
	Log   *slog.Logger
}

// List is the revocations in force: the file's and the store's.
type List struct {
	deps Deps

	mu   sync.Mutex // guards path and stat
	path string
	stat fileStat

	file  atomic.Pointer[set]
	store atomic.Pointer[set]
	// version is the store's revocation version last read (Run only).
	version int64
	failing bool // the last poll of the store failed (Run only)
}

type fileStat struct {
	mod  time.Time
	size int64
}

// New builds the List of revocation file path ("" for none), read now:
// an unreadable or malformed file is an error.
func New(path string, deps Deps) (*List, error) {
	l := &List{deps: deps}
	return l, l.SetFile(path)
}

// SetFile reads path ("" for none) and makes it the file in force. On an
// error the file in force stays.
func (l *List) SetFile(path string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.readLocked(path)
}

func (l *List) readLocked(path string) error {
	if path == "" {
		l.path, l.stat = "", fileStat{}
		l.file.Store(nil)
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("revocation.file: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("revocation.file: %w", err)
	}
	s, err := parse(data)
	if err != nil {
		return fmt.Errorf("revocation.file %s: %w", path, err)
	}
	l.path, l.stat = path, fileStat{fi.ModTime(), fi.Size()}
	l.file.Store(s)
	return nil
}

// Revoked reports whether a token of issuer iss ("" self-issued),
// subject sub and ID jti is revoked. Two atomic loads when nothing is.
func (l *List) Revoked(iss, sub, jti string) bool {
	return l.file.Load().has(iss, sub, jti) || l.store.Load().has(iss, sub, jti)
}

// Run polls the store (when shared) and the file every PollEvery until
// ctx ends.
func (l *List) Run(ctx context.Context) {
	t := time.NewTicker(PollEvery)
	defer t.Stop()
	for {
		l.Poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll reads the store's revocations if their version moved, and the
// file again if it changed. Run calls it; tests call it to step.
func (l *List) Poll(ctx context.Context) {
	if st := l.deps.Store; st != nil && st.Shared() {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		v, entries, err := st.Revocations(pctx, l.version)
		cancel()
		switch {
		case err != nil:
			if !l.failing {
				l.deps.Log.Warn("revocations: the limits store is unreachable; the revocations read last stay in force", "err", err)
			}
			l.failing = true
		default:
			if l.failing {
				l.deps.Log.Info("revocations: the limits store is reachable again")
			}
			l.failing = false
			if entries != nil {
				s := &set{subs: map[[2]string]struct{}{}, jtis: map[string]struct{}{}}
				for e := range entries {
					s.add(e) // written by Check'd revoke commands; a stray line is skipped
				}
				l.store.Store(s)
				l.version = v
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.path == "" {
		return
	}
	fi, err := os.Stat(l.path)
	if err != nil || (fi.ModTime().Equal(l.stat.mod) && fi.Size() == l.stat.size) {
		return
	}
	if err := l.readLocked(l.path); err != nil {
		l.deps.Log.Error("revocation file changed but cannot be used; the entries read last stay in force", "err", err)
		l.stat = fileStat{fi.ModTime(), fi.Size()} // said once per change
		return
	}
	l.deps.Log.Info("revocation file read again", "path", l.path)
}
