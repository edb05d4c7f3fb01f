package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/certs"
	"github.com/tileproxy/tileproxy/internal/logging"
	"github.com/tileproxy/tileproxy/internal/tilegen"
	"github.com/tileproxy/tileproxy/internal/worldtiles"
	"github.com/tileproxy/tileproxy/origin"
)

const demoBucket = "demo-tiles"

// demoCmd runs tileproxy against an in-process S3 seeded with the sample
// tileset, so a newcomer sees a map with no config, env or network. The
// proxy side is the production path: the real SDK talks HTTP to the fake.
func demoCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address of the demo server")
	metricsListen := fs.String("metrics-listen", "", "address for /metrics (off by default)")
	ttl := fs.Duration("ttl", 12*time.Hour, "lifetime of the printed token")
	useTLS := fs.Bool("tls", false, "serve https (HTTP/2) with a throwaway certificate for 127.0.0.1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runDemo(ctx, demoOptions{listen: *listen, metricsListen: *metricsListen, ttl: *ttl, tls: *useTLS}, stdout, stderr, nil)
}

type demoOptions struct {
	listen, metricsListen string
	ttl                   time.Duration
	// tls serves https with a throwaway self-signed certificate.
	tls bool
}

// runDemo is demoCmd without flags and signals, for tests. ready, when
// non-nil, receives the viewer URL once serving.
func runDemo(ctx context.Context, o demoOptions, stdout, stderr io.Writer, ready func(url string)) error {
	s3URL, closeS3, err := startFakeS3()
	if err != nil {
		return err
	}
	defer closeS3()

	secretBytes := make([]byte, 32)
	if _, err := rand.Read(secretBytes); err != nil {
		return err
	}
	secret := hex.EncodeToString(secretBytes)

	cfg := config.Default()
	cfg.Listen = o.listen
	cfg.MetricsListen = o.metricsListen
	cfg.Viewer = true
	cfg.DrainDelay = 0 // Ctrl-C on a laptop: no load balancer to drain
	cfg.Auth.HMACSecret = secret
	cfg.Auth.Cookie.Secure = false // the demo is plain http on loopback
	cfg.S3.Endpoint = s3URL
	cfg.S3.UsePathStyle = true
	cfg.Tilesets = []config.Tileset{
		// Real geography from one PMTiles archive, drawn with MapLibre:
		// the viewer's first map.
		{Name: "world", Bucket: demoBucket, Archive: worldArchive},
		{Name: "demo", Bucket: demoBucket, Prefix: "raster/", Format: "png", MinZoom: 0, MaxZoom: 3,
			Attribution: "tileproxy sample tiles"},
		{Name: "vector", Bucket: demoBucket, Prefix: "vector/", Format: "pbf", MinZoom: 0, MaxZoom: 1},
	}
	// An area of one country, built from world-atlas at start, for the
	// second link's scoped token (docs/entitlements.md).
	outline, err := worldtiles.Country(demoCountry)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tileproxy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	areaFile := filepath.Join(dir, "country.geojson")
	if err := os.WriteFile(areaFile, outline, 0o600); err != nil {
		return err
	}
	cfg.Areas = map[string]string{"country": areaFile}
	scheme := "http"
	if o.tls {
		// Throwaway, in the demo's temporary directory: gone at exit.
		cfg.TLS = config.TLS{CertFile: filepath.Join(dir, "demo.crt"), KeyFile: filepath.Join(dir, "demo.key")}
		if err := certs.WriteSelfSigned(cfg.TLS.CertFile, cfg.TLS.KeyFile, []string{"127.0.0.1", "localhost"}, 30*24*time.Hour); err != nil {
			return err
		}
		cfg.Auth.Cookie.Secure = true // https: the __Host- cookie works
		scheme = "https"
	}
	cfg.ApplyDefaults()
	// Resolve the address first so public_url and the printed link are right.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("demo: cannot listen on %s (%w); try -listen 127.0.0.1:0", cfg.Listen, err)
	}
	cfg.Listen = ln.Addr().String()
	ln.Close()
	cfg.PublicURL = scheme + "://" + cfg.Listen
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	logs := logging.New(cfg.Log, stderr)
	defer logs.Close()
	log := logs.Log
	app, err := newApp(ctx, &cfg, logs, origin.Deps{
		Logger: log,
		// The fake does not check signatures, but the SDK signs anyway.
		Credentials: credentials.NewStaticCredentialsProvider("demo", "demo-secret", ""),
	}, nil)
	if err != nil {
		return err
	}
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"*"}, TTL: o.ttl, Subject: "demo"})
	if err != nil {
		return err
	}
	viewer := fmt.Sprintf("%s/#access_token=%s", cfg.PublicURL, tok)
	scopedTok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), TTL: o.ttl, Subject: "demo-scoped",
		Claims: map[string]any{"tilesets": map[string]any{"world": map[string]any{"zoom": "0-5", "areas": []any{"country"}}}}})
	if err != nil {
		return err
	}
	scoped := fmt.Sprintf("%s/#access_token=%s", cfg.PublicURL, scopedTok)
	return app.run(ctx, func(string) {
		fmt.Fprintf(stdout, "\ntileproxy demo is running. Open the map viewer:\n\n  %s\n\n", viewer)
		fmt.Fprintf(stdout, "A token scoped to %s, zoom 0-5 (docs/entitlements.md):\n\n  %s\n\n", demoCountry, scoped)
		curl := "curl"
		if o.tls {
			fmt.Fprintf(stdout, "The certificate is a throwaway, self-signed for 127.0.0.1 (the browser warns once):\n\n  %s\n\n", cfg.TLS.CertFile)
			curl = "curl --cacert " + cfg.TLS.CertFile
		}
		fmt.Fprintf(stdout, "Or fetch a tile:\n\n  %s -H 'Authorization: Bearer %s' %s/tiles/demo/0/0/0.png -o tile.png\n\nCtrl-C stops it.\n", curl, tok, cfg.PublicURL)
		if ready != nil {
			ready(viewer)
		}
	})
}

// demoCountry is the country the demo's second link is scoped to.
const demoCountry = "Germany"

// worldArchive is where the demo keeps the world countries archive.
const worldArchive = "world/countries.pmtiles"

// startFakeS3 serves an in-memory S3 on a loopback port, seeded with the
// sample tileset, and returns its URL and a stop function.
func startFakeS3() (string, func(), error) { return startFakeS3Zoom(3) }

// startFakeS3Zoom is startFakeS3 with raster tiles to maxZoom.
func startFakeS3Zoom(maxZoom int) (string, func(), error) {
	backend := s3mem.New()
	if err := backend.CreateBucket(demoBucket); err != nil {
		return "", nil, err
	}
	tiles, err := tilegen.Set(maxZoom)
	if err != nil {
		return "", nil, err
	}
	for _, t := range tiles {
		meta := map[string]string{"Content-Type": t.ContentType}
		if t.ContentEncoding != "" {
			meta["Content-Encoding"] = t.ContentEncoding
		}
		if _, err := backend.PutObject(demoBucket, t.Key, meta, bytes.NewReader(t.Body), int64(len(t.Body)), nil); err != nil {
			return "", nil, err
		}
	}
	arc := worldtiles.Archive
	if _, err := backend.PutObject(demoBucket, worldArchive, map[string]string{"Content-Type": "application/octet-stream"},
		bytes.NewReader(arc), int64(len(arc)), nil); err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: gofakes3.New(backend).Server(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}
