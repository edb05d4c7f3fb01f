package logbuf

import (
	"io"
	"testing"
	"time"
)

// BenchmarkWriteParallel is the access line's path into the batch from
// every request goroutine at once: what the shared lock costs.
func BenchmarkWriteParallel(b *testing.B) {
	w, err := New(Config{Interval: time.Hour}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	line := make([]byte, 230)
	b.SetBytes(int64(len(line)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Write(line)
		}
	})
}
