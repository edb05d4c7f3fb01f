package memlimit

import (
	"runtime/debug"
	"testing"
)

// TestFollowsFile: the soft memory limit gives up what the cache's memory
// file takes, in steps, and takes it back.
func TestFollowsFile(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	const mib = 1 << 20
	l := &Limit{Base: 1024 * mib, Step: 8 * mib}
	debug.SetMemoryLimit(l.Base)
	for _, tc := range []struct{ file, want int64 }{
		{4 * mib, 1024 * mib},  // under a step: left alone
		{10 * mib, 1014 * mib}, // a step: follows
		{12 * mib, 1014 * mib},
		{100 * mib, 924 * mib},
		{1020 * mib, 32 * mib}, // never below the floor
		{0, 1024 * mib},
	} {
		l.Follow(tc.file)
		if got := debug.SetMemoryLimit(-1); got != tc.want {
			t.Errorf("file %d MiB: limit %d MiB, want %d MiB", tc.file/mib, got/mib, tc.want/mib)
		}
	}
	var none *Limit // GOMEMLIMIT set: nothing to follow
	none.Follow(500 * mib)
	if got := debug.SetMemoryLimit(-1); got != 1024*mib {
		t.Errorf("a nil Limit moved the limit to %d MiB", got/mib)
	}
}

func TestSetRespectsEnvironment(t *testing.T) {
	oldLimit, oldGC := debug.SetMemoryLimit(-1), debug.SetGCPercent(-1)
	defer func() { debug.SetMemoryLimit(oldLimit); debug.SetGCPercent(oldGC) }()
	t.Setenv("GOMEMLIMIT", "1GiB")
	if l, pct := Set(256 << 20); l != nil || pct != 0 {
		t.Errorf("with GOMEMLIMIT: %v %d, want nothing set", l, pct)
	}
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("GOGC", "100")
	l, pct := Set(256 << 20)
	if l == nil || pct != 0 || l.Base != 256<<20+32<<20+32<<20 {
		t.Errorf("with GOGC: %+v %d", l, pct)
	}
	if got := debug.SetMemoryLimit(-1); got != l.Base {
		t.Errorf("limit %d, want %d", got, l.Base)
	}
}
