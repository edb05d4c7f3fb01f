package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"sigs.k8s.io/yaml"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// TestComposeFileValid runs Debian's docker-compose over the file: no
// Docker engine is needed for `config`. The default set is the single
// tileproxy; the scale profile adds three replicas behind HAProxy, a
// Prometheus scraping each, and Grafana.
func TestComposeFileValid(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		testenv.Require(t, "docker-compose", "it is not installed (apt-get install docker-compose)")
	}
	out, err := exec.Command(bin, "-f", "../../docker-compose.yml", "--profile", "scale", "config").CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var doc struct {
		Services map[string]struct {
			Profiles []string
			Ports    []any
			Volumes  []any
		}
	}
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("config output: %v", err)
	}
	var def, scale []string
	for name, svc := range doc.Services {
		if len(svc.Profiles) == 0 {
			def = append(def, name)
		} else if len(svc.Profiles) == 1 && svc.Profiles[0] == "scale" {
			scale = append(scale, name)
		} else {
			t.Errorf("%s has profiles %v", name, svc.Profiles)
		}
	}
	sort.Strings(def)
	sort.Strings(scale)
	if got := strings.Join(def, ","); got != "init,minio,prometheus,tileproxy" {
		t.Errorf("default services: %s", got)
	}
	if got := strings.Join(scale, ","); got != "grafana,haproxy,prometheus-scale,tileproxy-1,tileproxy-2,tileproxy-3" {
		t.Errorf("scale services: %s", got)
	}
	for _, r := range []string{"tileproxy-1", "tileproxy-2", "tileproxy-3"} {
		if svc := doc.Services[r]; len(svc.Ports) != 0 || len(svc.Volumes) != 1 {
			t.Errorf("%s: ports %v (want none: HAProxy fronts them), volumes %v", r, svc.Ports, svc.Volumes)
		}
	}
}

// TestScaleConfigs checks the scale profile's HAProxy and Prometheus
// files with the real tools: HAProxy hashes the path only (never the
// query, which may carry a token), consistently, and health-checks
// /readyz; Prometheus scrapes every replica.
func TestScaleConfigs(t *testing.T) {
	cfg, err := os.ReadFile("../../deploy/compose/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"balance uri path-only", "hash-type consistent", "option httpchk GET /readyz",
		"server tileproxy-1 ", "server tileproxy-2 ", "server tileproxy-3 "} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		testenv.Require(t, "haproxy", "it is not installed (apt-get install haproxy)")
	} else if out, err := exec.Command(haproxy, "-c", "-f", "../../deploy/compose/haproxy.cfg").CombinedOutput(); err != nil {
		t.Errorf("haproxy -c: %v\n%s", err, out)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Require(t, "promtool", "it is not installed (apt-get install prometheus)")
	} else if out, err := exec.Command(promtool, "check", "config", "../../deploy/compose/prometheus-scale.yml").CombinedOutput(); err != nil {
		t.Errorf("promtool check config: %v\n%s", err, out)
	}
	scrape, _ := os.ReadFile("../../deploy/compose/prometheus-scale.yml")
	for _, r := range []string{"tileproxy-1:9090", "tileproxy-2:9090", "tileproxy-3:9090"} {
		if !strings.Contains(string(scrape), r) {
			t.Errorf("prometheus-scale.yml does not scrape %s", r)
		}
	}
}

func TestComposeTileproxyConfig(t *testing.T) {
	t.Setenv("TILEPROXY_HMAC_SECRET", strings.Repeat("s", 32))
	t.Setenv("S3_ENDPOINT", "http://minio:9000")
	cfg, err := config.Load("../../deploy/compose/tileproxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.S3.RoleARN == "" || len(cfg.Tilesets) != 2 {
		t.Errorf("compose config lost its STS role or tilesets: %+v", cfg.S3)
	}
}

// metricName matches tileproxy metric names in PromQL.
var metricName = regexp.MustCompile(`tileproxy_[a-z_]+`)

func TestDashboardUsesRealMetrics(t *testing.T) {
	b, err := os.ReadFile("../../deploy/compose/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct{ Panels []any }
	if err := json.Unmarshal(b, &d); err != nil || len(d.Panels) == 0 {
		t.Fatalf("dashboard JSON: %v", err)
	}
	known := map[string]bool{}
	for _, m := range []string{"requests_total", "request_duration_seconds_bucket", "cache_requests_total", "cache_bytes",
		"origin_requests_total", "origin_request_duration_seconds_bucket", "auth_failures_total",
		"sts_assume_role_total", "sts_credentials_expiry_seconds"} {
		known["tileproxy_"+m] = true
	}
	for _, m := range metricName.FindAllString(string(b), -1) {
		if !known[m] {
			t.Errorf("dashboard queries %s, which tileproxy does not export", m)
		}
	}
}

// TestInitScript runs deploy/compose/init.sh as the compose init service does
// (bucket, tiles, reader user) against the test MinIO, twice, to show it
// works and is idempotent.
func TestInitScript(t *testing.T) {
	env := testenv.MinIO(t)
	mc := os.Getenv("TILEPROXY_TEST_MC_BIN")
	if mc == "" {
		testenv.Require(t, "mc", "TILEPROXY_TEST_MC_BIN is not set")
	}
	bucket := fmt.Sprintf("init-test-%d", os.Getpid())
	reader, readerSecret := "init-reader-"+fmt.Sprint(os.Getpid()), "init-reader-secret-0123456789"
	for range 2 {
		cmd := exec.Command("sh", "../../deploy/compose/init.sh")
		cmd.Env = append(os.Environ(),
			"MINIO_ENDPOINT="+env.Endpoint, "MINIO_ROOT_USER="+env.AccessKey, "MINIO_ROOT_PASSWORD="+env.SecretKey,
			"READER_ACCESS_KEY="+reader, "READER_SECRET_KEY="+readerSecret,
			"BUCKET="+bucket, "TILES_DIR=../../testdata/tiles", "MC="+mc, "MC_CONFIG_DIR="+t.TempDir(),
			// Its own policy: the suite's reader user shares this MinIO.
			"POLICY_NAME=init-test-read-"+fmt.Sprint(os.Getpid()))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("init.sh: %v\n%s", err, out)
		}
	}
	ctx := context.Background()
	n := 0
	p := s3.NewListObjectsV2Paginator(env.Client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Contents)
	}
	want, _ := countFiles("../../testdata/tiles")
	if n != want {
		t.Errorf("uploaded %d objects, want %d", n, want)
	}
	rc := testenv.NewClient(env.Endpoint, reader, readerSecret)
	out, err := rc.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("raster/0/0/0.png")})
	if err != nil {
		t.Fatalf("reader GetObject: %v", err)
	}
	io.Copy(io.Discard, out.Body)
	out.Body.Close()
	_, err = rc.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("x"), Body: strings.NewReader("x")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "AccessDenied" {
		t.Errorf("reader PutObject: got %v, want AccessDenied", err)
	}
}

func countFiles(dir string) (int, error) {
	n := 0
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if e.IsDir() {
			m, err := countFiles(dir + "/" + e.Name())
			if err != nil {
				return 0, err
			}
			n += m
		} else {
			n++
		}
	}
	return n, nil
}
