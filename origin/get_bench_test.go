package origin_test

import (
	"context"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/synth"
	"github.com/tileproxy/tileproxy/origin"
)

// BenchmarkGetObject is one 4 KB GetObject from a synthetic S3 endpoint
// in the same process (which costs next to nothing), through origin.S3 and
// through a plain SDK client: what a miss costs tileproxy's origin side,
// and how much of that is the SDK's own.
func BenchmarkGetObject(b *testing.B) {
	set := synth.Set{N: 1000, Size: 4096}
	srv := httptest.NewServer(set.S3())
	defer srv.Close()
	ctx := context.Background()
	b.Run("origin", func(b *testing.B) {
		cfg := config.Default()
		cfg.S3.Endpoint = srv.URL
		cfg.S3.UsePathStyle = true
		cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: "synth", Prefix: synth.Prefix}}
		cfg.ApplyDefaults()
		o, err := origin.New(ctx, &cfg, origin.Deps{Credentials: credentials.NewStaticCredentialsProvider("k", "s", "")})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			obj, err := o.Get(ctx, origin.Request{Tileset: "a", Bucket: "synth", Key: synth.Prefix + synth.Path(i%set.N)})
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, obj.Body)
			obj.Body.Close()
			i++
		}
	})
	b.Run("sdk", func(b *testing.B) {
		c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
			Credentials:                credentials.NewStaticCredentialsProvider("k", "s", ""),
			ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired})
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("synth"), Key: aws.String(synth.Prefix + synth.Path(i%set.N))})
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, out.Body)
			out.Body.Close()
			i++
		}
	})
}
