package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/synth"
	"github.com/tileproxy/tileproxy/origin"
)

// BenchmarkHandlerMissSDK is the whole handler on a miss, through the
// real origin (the AWS SDK) to a synthetic S3 endpoint in the same
// process: CPU per miss, with origin.BenchmarkGetObject the same GET
// without tileproxy around it.
func BenchmarkHandlerMissSDK(b *testing.B) {
	set := synth.Set{N: 1 << 20, Size: 4096}
	srv := httptest.NewServer(set.S3())
	defer srv.Close()
	cfg := config.Default()
	cfg.S3.Endpoint = srv.URL
	cfg.S3.UsePathStyle = true
	cfg.Tilesets = []config.Tileset{{Name: "synth", Bucket: "synth", Prefix: synth.Prefix}}
	cfg.ApplyDefaults()
	o, err := origin.New(context.Background(), &cfg, origin.Deps{Credentials: credentials.NewStaticCredentialsProvider("k", "s", ""), Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	f := synthFixture(b, 256<<20, o)
	tok := token(b, time.Hour, "synth")
	w := &nopWriter{h: http.Header{}}
	i := 0
	b.ReportAllocs()
	c0 := cpuTime()
	defer func() { b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/float64(i), "cpu-ns/op") }()
	for b.Loop() {
		p := sizeTileset + synth.Path(i)
		r := httptest.NewRequest("GET", p, nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		clear(w.h)
		f.p.ServeHTTP(w, r)
		i++
	}
}
