package accesslog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// slogLine is what slog's own handler prints for l: the reference the
// hand-written appenders must match byte for byte.
func slogLine(t testing.TB, format Format, l *Line) string {
	var buf bytes.Buffer
	var h slog.Handler = slog.NewTextHandler(&buf, nil)
	if format == JSON {
		h = slog.NewJSONHandler(&buf, nil)
	}
	r := slog.NewRecord(l.Time, slog.LevelInfo, "request", 0)
	r.AddAttrs(
		slog.String("method", l.Method),
		slog.String("path", l.Path),
		slog.Int("status", l.Status),
		slog.Int64("bytes", l.Bytes),
		slog.Duration("duration", l.Duration),
	)
	for _, f := range []struct{ k, v string }{{"proto", l.Proto}, {"tileset", l.Tileset}, {"cache", l.Cache}, {"subject", l.Subject}, {"reason", l.Reason}, {"err", l.Err}} {
		if f.v != "" {
			r.AddAttrs(slog.String(f.k, f.v))
		}
	}
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestMatchesSlog(t *testing.T) {
	when := time.Date(2026, 11, 27, 13, 4, 5, 123456789, time.UTC)
	for _, l := range []Line{
		{Time: when, Method: "GET", Path: "/tiles/city/3/4/2.png", Status: 200, Bytes: 23745, Duration: 16909 * time.Nanosecond, Proto: "HTTP/2.0", Tileset: "city", Cache: "HIT", Subject: "a1b2c3"},
		{Time: when, Method: "GET", Path: "/tiles/city/9/0/0.png", Status: 403, Tileset: "city", Subject: "a1b2c3", Reason: "outside_grant"},
		{Time: when.Add(-123456789), Method: "HEAD", Path: "/", Status: 404, Duration: 3 * time.Millisecond},
		{Time: when.In(time.FixedZone("x", 3600)), Method: "GET", Path: "/tiles/a b/=\"q\"", Status: 502, Bytes: 0, Duration: time.Second, Tileset: "_unknown", Err: "origin: GetObject: AccessDenied\n\tnext line"},
		{Time: when, Method: "", Path: "/\x00\x1f\x7f\\back\u2028\u2029é\xff\xfe", Status: 400, Err: "<b>&amp;</b> \u00a0 \u200b"},
		{Time: when, Method: "GET", Path: "/tiles/ü/日本/\U0001F5FA.png", Status: 200, Bytes: 1 << 40, Duration: -5, Cache: "STALE"},
	} {
		for _, f := range []Format{Text, JSON} {
			want := slogLine(t, f, &l)
			if got := string(AppendLine(nil, f, &l)); got != want {
				t.Errorf("format %d:\n got %q\nwant %q", f, got, want)
			}
		}
	}
}

// FuzzMatchesSlog holds the appenders to slog's output for any strings a
// request could put in the line.
func FuzzMatchesSlog(f *testing.F) {
	f.Add("GET", "/tiles/a/0/0/0.png", "HIT", "", int64(16909))
	f.Add("G=T", "/a b\"\\\x01\u2028\xff", "", "err: \n", int64(-1))
	f.Fuzz(func(t *testing.T, method, path, cache, errText string, d int64) {
		l := Line{Time: time.Unix(1795000000, d).UTC(), Method: method, Path: path, Status: 200, Bytes: d, Duration: time.Duration(d), Cache: cache, Err: errText}
		for _, fm := range []Format{Text, JSON} {
			if got, want := string(AppendLine(nil, fm, &l)), slogLine(t, fm, &l); got != want {
				t.Fatalf("format %d:\n got %q\nwant %q", fm, got, want)
			}
		}
	})
}

func TestLogOneWritePerLine(t *testing.T) {
	var w countingWriter
	lg := New(JSON, &w)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				lg.Log(&Line{Time: time.Now(), Method: "GET", Path: "/x", Status: 200, Err: strings.Repeat("e", j*50)})
			}
		}()
	}
	wg.Wait()
	if w.writes != 800 || strings.Count(w.buf.String(), "\n") != 800 {
		t.Fatalf("writes %d, lines %d; want 800 each", w.writes, strings.Count(w.buf.String(), "\n"))
	}
	for _, line := range strings.Split(strings.TrimSuffix(w.buf.String(), "\n"), "\n") {
		if !strings.HasPrefix(line, `{"time":"`) || !strings.HasSuffix(line, "}") {
			t.Fatalf("torn line %q", line)
		}
	}
}

type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(p)
}

func BenchmarkLog(b *testing.B) {
	l := Line{Time: time.Now(), Method: "GET", Path: "/tiles/city/3/4/2.png", Status: 200, Bytes: 23745, Duration: 16909, Tileset: "city", Cache: "HIT", Subject: "a1b2c3d4e5f6"}
	for _, f := range []Format{Text, JSON} {
		b.Run([...]string{"text", "json"}[f], func(b *testing.B) {
			lg := New(f, discard{})
			b.ReportAllocs()
			for b.Loop() {
				lg.Log(&l)
			}
		})
		b.Run([...]string{"text", "json"}[f]+"-slog", func(b *testing.B) {
			log := slog.New(slog.NewJSONHandler(discard{}, nil))
			if f == Text {
				log = slog.New(slog.NewTextHandler(discard{}, nil))
			}
			b.ReportAllocs()
			for b.Loop() {
				log.LogAttrs(context.Background(), slog.LevelInfo, "request",
					slog.String("method", l.Method), slog.String("path", l.Path), slog.Int("status", l.Status),
					slog.Int64("bytes", l.Bytes), slog.Duration("duration", l.Duration), slog.String("tileset", l.Tileset),
					slog.String("cache", l.Cache), slog.String("subject", l.Subject))
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
