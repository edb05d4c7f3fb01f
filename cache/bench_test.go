package cache

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkGetHitParallel measures a fresh hit under contention: the
// lookup the proxy does for every hot tile.
func BenchmarkGetHitParallel(b *testing.B) {
	c, err := New(Config{MaxBytes: 64 << 20, MaxObjectBytes: 1 << 20, TTL: time.Hour, LoadTimeout: time.Second}, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 1024)
	body := make([]byte, 20<<10)
	load := func(context.Context, string, *Entry) (*Entry, error) {
		return NewEntry(body, "image/png", "", `"e"`, time.Time{}), nil
	}
	for i := range keys {
		keys[i] = fmt.Sprintf("tiles/city/%d/%d/%d.png", 10, i, i)
		c.Get(context.Background(), keys[i], load)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, out, _ := c.Get(ctx, keys[i&1023], load); out != Hit {
				b.Fatal("not a hit")
			}
			i++
		}
	})
}
