package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/tileproxy/tileproxy/internal/testkit/synth"
)

// The synth* commands are bench/size.sh's: tiles computed from their
// index (internal/testkit/synth), at sizes up to a million.

func synthFlags(name string, args []string) (*flag.FlagSet, *synth.Set, func()) {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	set := &synth.Set{}
	fs.IntVar(&set.N, "n", 10000, "tiles")
	fs.IntVar(&set.Size, "size", 4096, "mean body bytes")
	return fs, set, func() { fs.Parse(args) }
}

// synthServe serves the synthetic tiles: as S3 (-as s3, the origin for
// tileproxy serve where MinIO would take an hour to load) or as the bare
// baseline (-as bare, holding them in a map under /tiles/synth/).
func synthServe(args []string) error {
	fs, set, parse := synthFlags("synth-serve", args)
	as := fs.String("as", "s3", "s3 or bare")
	listen := fs.String("listen", "127.0.0.1:0", "address")
	parse()
	var h http.Handler
	switch *as {
	case "s3":
		h = set.S3()
	case "bare":
		h = set.Bare("/tiles/synth/")
	default:
		return fmt.Errorf("-as %q: want s3 or bare", *as)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "synth-serve: %d tiles as %s on %s\n", set.N, *as, ln.Addr())
	return (&http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
}

func s3Client(endpoint, ak, sk string) *s3.Client {
	return s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(ak, sk, ""),
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		HTTPClient:                 &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}})
}

// each runs fn for tiles 0..n-1 from workers goroutines and prints
// "seconds per-second errors cpu-µs-per-op" (this process's CPU).
func each(n, workers int, fn func(i int) error) error {
	var next, failed atomic.Int64
	var first atomic.Value
	start, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	fmt.Printf("%.2f %.0f %d %.0f\n", secs, float64(n)/secs, failed.Load(), float64((cpuTime()-cpu0).Microseconds())/float64(n))
	if err, ok := first.Load().(error); ok {
		return fmt.Errorf("%d of %d failed, first: %w", failed.Load(), n, err)
	}
	return nil
}

// synthS3 puts the tiles into a bucket (-op put) or reads them back with
// a plain SDK client (-op get: what a miss costs without tileproxy).
func synthS3(args []string) error {
	fs, set, parse := synthFlags("synth-s3", args)
	op := fs.String("op", "get", "put or get")
	endpoint := fs.String("s3", "", "S3 endpoint")
	ak, sk := fs.String("ak", "", "access key"), fs.String("sk", "", "secret key")
	bucket := fs.String("bucket", "", "bucket")
	workers := fs.Int("workers", 16, "concurrent requests")
	parse()
	c := s3Client(*endpoint, *ak, *sk)
	ctx := context.Background()
	return each(set.N, *workers, func(i int) error {
		key := aws.String(synth.Prefix + synth.Path(i))
		if *op == "put" {
			_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: key, Body: bytes.NewReader(set.Body(i)),
				ContentType: aws.String(synth.ContentType)})
			return err
		}
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: key})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		_, err = io.Copy(io.Discard, out.Body)
		return err
	})
}

// synthFill asks tileproxy for every tile once (misses, when it is cold).
func synthFill(args []string) error {
	fs, set, parse := synthFlags("synth-fill", args)
	proxy := fs.String("proxy", "", "tileproxy base URL")
	tok := fs.String("token", "", "token")
	workers := fs.Int("workers", 16, "concurrent requests")
	parse()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *workers}}
	return each(set.N, *workers, func(i int) error {
		_, code, err := timedGet(hc, *proxy+"/tiles/synth/"+synth.Path(i), *tok)
		if err == nil && code != 200 {
			err = fmt.Errorf("%s: %d", synth.Path(i), code)
		}
		return err
	})
}

// cpuTime is this process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
