// Command benchtool is the Go half of bench/run.sh: it generates the
// benchmark tileset, mints tokens, runs the bare net/http baseline, and
// measures misses, the thundering herd and cache filling. Every load it
// makes is bounded in count and goes to loopback addresses only.
package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/protomaps/go-pmtiles/pmtiles"

	"github.com/tileproxy/tileproxy/internal/testkit/archivetest"
	"github.com/tileproxy/tileproxy/internal/tilegen"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool gentiles|pmtiles|token|bare|miss|herd|fill|coldtiles|synth-serve|synth-s3|synth-fill [flags]")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"gentiles": genTiles, "token": token, "bare": bare, "miss": miss, "herd": herd, "fill": fill,
		"pmtiles": writeArchive, "coldtiles": coldTiles,
		"synth-serve": synthServe, "synth-s3": synthS3, "synth-fill": synthFill,
	}
	f, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintln(os.Stderr, "benchtool: unknown command", os.Args[1])
		os.Exit(2)
	}
	if err := f(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

// genTiles writes n zoom-6 PNG tiles of 5-50 KB: the labelled sample tile
// with a block of noise whose size sets the tile's weight, since noise is
// what PNG cannot compress.
func genTiles(args []string) error {
	fs := flag.NewFlagSet("gentiles", flag.ExitOnError)
	out := fs.String("out", "", "directory (gets z/x/y.png and urls.txt)")
	n := fs.Int("n", 2048, "number of tiles")
	fs.Parse(args)
	rng := rand.New(rand.NewPCG(1, 2))
	var urls []string
	var total int64
	for i := range *n {
		z, x, y := 6, i%64, i/64
		base, err := tilegen.PNG(z, x, y)
		if err != nil {
			return err
		}
		img, err := png.Decode(bytes.NewReader(base))
		if err != nil {
			return err
		}
		rgba := image.NewRGBA(img.Bounds())
		draw.Draw(rgba, rgba.Bounds(), img, image.Point{}, draw.Src)
		side := 30 + rng.IntN(90) // noise block edge: sets the size
		for py := 0; py < side; py++ {
			for px := 0; px < side; px++ {
				rgba.Set(8+px, 8+py, color.RGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255})
			}
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, rgba); err != nil {
			return err
		}
		p := filepath.Join(*out, "tiles", "demo", strconv.Itoa(z), strconv.Itoa(x), strconv.Itoa(y)+".png")
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			return err
		}
		total += int64(buf.Len())
		urls = append(urls, fmt.Sprintf("/tiles/demo/%d/%d/%d.png", z, x, y))
	}
	fmt.Printf("%d tiles, %.1f MB, mean %.1f KB\n", *n, float64(total)/1e6, float64(total)/float64(*n)/1e3)
	return os.WriteFile(filepath.Join(*out, "urls.txt"), []byte(strings.Join(urls, "\n")+"\n"), 0o644)
}

// token mints an ES256 token from a PKCS#8 PEM key (HS256 tokens come
// from `tileproxy token`).
func token(args []string) error {
	fs := flag.NewFlagSet("token", flag.ExitOnError)
	keyFile := fs.String("key", "testdata/keys/ec.pem", "ES256 private key")
	fs.Parse(args)
	b, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return fmt.Errorf("%s: no PEM", *keyFile)
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return err
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"exp": time.Now().Add(2 * time.Hour).Unix(), "tilesets": "*", "sub": "bench",
	}).SignedString(key)
	if err != nil {
		return err
	}
	fmt.Println(s)
	return nil
}

// bare serves the same tiles from a map with a plain net/http handler:
// Go's ceiling for this job. It sends the header set a tileproxy hit
// sends (per-tile ETag and Last-Modified, as S3 would give them), each
// with Header().Set, so both servers put the same bytes on the wire and
// the comparison measures authentication, caching and logging alone.
func bare(args []string) error {
	fs := flag.NewFlagSet("bare", flag.ExitOnError)
	dir := fs.String("dir", "", "directory from gentiles")
	listen := fs.String("listen", "127.0.0.1:0", "address")
	fs.Parse(args)
	type tile struct {
		body               []byte
		etag, lastModified string
	}
	tiles := map[string]tile{}
	root := filepath.Join(*dir, "tiles")
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(*dir, p)
		tiles["/"+filepath.ToSlash(rel)] = tile{
			body:         b,
			etag:         fmt.Sprintf(`"%x"`, md5.Sum(b)),
			lastModified: fi.ModTime().UTC().Format(http.TimeFormat),
		}
		return nil
	})
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, ok := tiles[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Length", strconv.Itoa(len(t.body)))
		w.Header().Set("Cache-Control", "private, max-age=3600")
		w.Header().Set("ETag", t.etag)
		w.Header().Set("Last-Modified", t.lastModified)
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("X-Cache", "HIT")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Write(t.body)
	})
	fmt.Fprintf(os.Stderr, "bare: %d tiles on %s\n", len(tiles), *listen)
	return http.ListenAndServe(*listen, h)
}

func readURLs(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

func timedGet(c *http.Client, url, tok string) (time.Duration, int, error) {
	req, _ := http.NewRequest("GET", url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(start), resp.StatusCode, nil
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

// miss times the same GETs through a tileproxy that caches nothing and
// directly against MinIO with the SDK, interleaved so both see the same
// machine, and prints: p50 p99 (proxy), p50 p99 (direct), in ms.
func miss(args []string) error {
	fs := flag.NewFlagSet("miss", flag.ExitOnError)
	proxy := fs.String("proxy", "", "tileproxy base URL (cache off)")
	tok := fs.String("token", "", "token")
	endpoint := fs.String("s3", "", "MinIO endpoint")
	ak, sk := fs.String("ak", "", "access key"), fs.String("sk", "", "secret key")
	bucket := fs.String("bucket", "", "bucket")
	urlsFile := fs.String("urls", "", "urls.txt")
	n := fs.Int("n", 400, "requests of each kind")
	fs.Parse(args)
	urls, err := readURLs(*urlsFile)
	if err != nil {
		return err
	}
	client := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(*endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider(*ak, *sk, ""),
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	var viaProxy, direct []time.Duration
	ctx := context.Background()
	for i := range *n {
		u := urls[i%len(urls)]
		d, code, err := timedGet(hc, *proxy+u, *tok)
		if err != nil || code != 200 {
			return fmt.Errorf("proxy %s: %d %v", u, code, err)
		}
		viaProxy = append(viaProxy, d)
		start := time.Now()
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: aws.String(strings.TrimPrefix(u, "/"))})
		if err != nil {
			return err
		}
		io.Copy(io.Discard, out.Body)
		out.Body.Close()
		direct = append(direct, time.Since(start))
	}
	fmt.Println(ms(pct(viaProxy, .5)), ms(pct(viaProxy, .99)), ms(pct(direct, .5)), ms(pct(direct, .99)))
	return nil
}

// originOK matches the ok origin requests of one tileset.
func originOK(tileset string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^tileproxy_origin_requests_total\{result="ok",tileset="` + regexp.QuoteMeta(tileset) + `"\} (\d+)`)
}

func originGets(metricsURL, tileset string) (int, error) {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := originOK(tileset).FindSubmatch(b)
	if m == nil {
		return 0, nil
	}
	return strconv.Atoi(string(m[1]))
}

// herd sends n concurrent first requests for one tile and prints how many
// S3 GETs they caused (from tileproxy's own origin counter).
func herd(args []string) error {
	fs := flag.NewFlagSet("herd", flag.ExitOnError)
	proxy := fs.String("proxy", "", "tileproxy base URL")
	metricsURL := fs.String("metrics", "", "tileproxy /metrics URL")
	tok := fs.String("token", "", "token")
	path := fs.String("path", "", "a tile not requested before")
	n := fs.Int("n", 200, "concurrent requests")
	fs.Parse(args)
	before, err := originGets(*metricsURL, "demo")
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *n, MaxConnsPerHost: *n}}
	var wg sync.WaitGroup
	start := make(chan struct{})
	var mu sync.Mutex
	bad := 0
	for range *n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, code, err := timedGet(hc, *proxy+*path, *tok)
			if err != nil || code != 200 {
				mu.Lock()
				bad++
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	after, err := originGets(*metricsURL, "demo")
	if err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d herd requests failed", bad, *n)
	}
	fmt.Println(after - before)
	return nil
}

// fill requests n distinct objects under prefix once each (to push data
// through a cache much larger than it).
func fill(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	proxy := fs.String("proxy", "", "tileproxy base URL")
	tok := fs.String("token", "", "token")
	prefix := fs.String("prefix", "/tiles/fill/", "URL prefix")
	n := fs.Int("n", 320, "objects")
	fs.Parse(args)
	hc := &http.Client{}
	for i := range *n {
		if _, code, err := timedGet(hc, fmt.Sprintf("%s%s%d.bin", *proxy, *prefix, i), *tok); err != nil || code != 200 {
			return fmt.Errorf("fill %d: %d %v", i, code, err)
		}
	}
	return nil
}

// writeArchive packs the tiles gentiles wrote (dir/tiles/demo/z/x/y.png)
// into one PMTiles archive with leaf directories, as go-pmtiles writes them.
func writeArchive(args []string) error {
	fs := flag.NewFlagSet("pmtiles", flag.ExitOnError)
	dir := fs.String("dir", "", "gentiles output directory")
	out := fs.String("out", "", "archive to write")
	fs.Parse(args)
	tiles := map[pmtiles.Zxy][]byte{}
	root := filepath.Join(*dir, "tiles", "demo")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var z uint8
		var x, y uint32
		rel, _ := filepath.Rel(root, p)
		if _, err := fmt.Sscanf(filepath.ToSlash(rel), "%d/%d/%d.png", &z, &x, &y); err != nil {
			return nil
		}
		b, err := os.ReadFile(p)
		tiles[pmtiles.Zxy{Z: z, X: x, Y: y}] = b
		return err
	})
	if err != nil {
		return err
	}
	arc := archivetest.Build(tiles, archivetest.Options{TileType: pmtiles.Png, Gzip: true, Leaves: true, MinZoom: 6, MaxZoom: 6})
	fmt.Printf("archive of %d tiles, %.1f MB\n", len(tiles), float64(len(arc))/1e6)
	return os.WriteFile(*out, arc, 0o644)
}

// coldTiles asks an archive tileset for one tile (the head and the leaf
// directory come with it), then for n other tiles none asked before, and
// prints the origin requests per cold tile: one when directories are warm.
func coldTiles(args []string) error {
	fs := flag.NewFlagSet("coldtiles", flag.ExitOnError)
	proxy := fs.String("proxy", "", "tileproxy base URL")
	metrics := fs.String("metrics", "", "tileproxy metrics URL")
	tok := fs.String("token", "", "bearer token")
	urlsFile := fs.String("urls", "", "tile paths of the archive tileset")
	n := fs.Int("n", 100, "cold tiles")
	fs.Parse(args)
	urls, err := readURLs(*urlsFile)
	if err != nil {
		return err
	}
	if len(urls) < *n+1 {
		return fmt.Errorf("need %d urls", *n+1)
	}
	c := &http.Client{}
	if _, code, err := timedGet(c, *proxy+urls[0], *tok); err != nil || code != 200 {
		return fmt.Errorf("first tile: %d %v", code, err)
	}
	before, err := originGets(*metrics, "pm")
	if err != nil {
		return err
	}
	for _, u := range urls[1 : *n+1] {
		if _, code, err := timedGet(c, *proxy+u, *tok); err != nil || code != 200 {
			return fmt.Errorf("%s: %d %v", u, code, err)
		}
	}
	after, err := originGets(*metrics, "pm")
	if err != nil {
		return err
	}
	fmt.Printf("%.2f\n", float64(after-before)/float64(*n))
	return nil
}
