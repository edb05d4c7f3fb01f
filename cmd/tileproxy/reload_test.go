package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/internal/testenv"
)

// TestReload: a valid file switches tilesets in one step, keeps the cached
// tiles of tilesets that stay and drops those of tilesets that go; an
// invalid one is refused with every problem logged and the old
// configuration serving on; a changed listener is reported as needing a
// restart. Counted in config_reloads_total and config_info.
func TestReload(t *testing.T) {
	var logs testenv.SyncBuffer
	a, base := runningApp(t, &logs)
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(metricsSecret), Tilesets: []string{"*"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Cache")
	}
	for _, p := range []string{"/tiles/demo/0/0/0.png", "/tiles/vector/0/0/0.pbf"} {
		if code, _ := get(p); code != 200 {
			t.Fatalf("%s before reload: %d", p, code)
		}
	}
	if code, xc := get("/tiles/demo/0/0/0.png"); code != 200 || xc != "HIT" {
		t.Fatalf("demo tile not cached: %d %s", code, xc)
	}

	file := func(listen, tilesets string) string {
		p := filepath.Join(t.TempDir(), "tileproxy.yaml")
		os.WriteFile(p, []byte(fmt.Sprintf(`listen: %q
metrics_listen: %q
drain_delay: 0s
auth: {hmac_secret: %q}
s3: {endpoint: %q, use_path_style: true}
tilesets: %s
`, listen, a.cfg.MetricsListen, metricsSecret, a.cfg.S3.Endpoint, tilesets)), 0o600)
		return p
	}
	// vector goes, extra comes, demo stays; the listener "changes".
	good := file("127.0.0.1:1", fmt.Sprintf(`[{name: demo, bucket: %s, prefix: raster/}, {name: extra, bucket: %s, prefix: extra/}]`, demoBucket, demoBucket))
	if err := a.reload(good); err != nil {
		t.Fatalf("valid reload refused: %v", err)
	}
	if code, xc := get("/tiles/demo/0/0/0.png"); code != 200 || xc != "HIT" {
		t.Errorf("demo after reload: %d %s, want a HIT from the kept cache", code, xc)
	}
	if code, _ := get("/tiles/vector/0/0/0.pbf"); code != 404 {
		t.Errorf("removed tileset after reload: %d, want 404", code)
	}
	if code, _ := get("/tiles/extra.json"); code != 200 {
		t.Errorf("added tileset after reload: %d, want 200", code)
	}
	if n := a.cache.RemoveIf(func(k string) bool { return strings.HasPrefix(k, demoBucket+"/vector/") }); n != 0 {
		t.Errorf("%d cached tiles of the removed tileset survived the reload", n)
	}
	if !strings.Contains(logs.String(), `"field":"listen"`) {
		t.Error("a changed listen address was not reported as needing a restart")
	}

	// An invalid file: refused, every problem logged, demo still served.
	bad := file("127.0.0.1:1", fmt.Sprintf(`[{name: a, bucket: %s, prefix: a}, {name: b, bucket: %s, prefix: a-b/}]`, demoBucket, demoBucket))
	if err := a.reload(bad); err == nil {
		t.Fatal("invalid reload accepted")
	}
	if !strings.Contains(logs.String(), "must end in /") || !strings.Contains(logs.String(), "overlaps") {
		t.Errorf("the problems were not logged:\n%s", logs.String())
	}
	if code, xc := get("/tiles/demo/0/0/0.png"); code != 200 || xc != "HIT" {
		t.Errorf("demo after a refused reload: %d %s", code, xc)
	}
	if code, _ := get("/tiles/extra.json"); code != 200 {
		t.Errorf("the configuration in force was lost: extra %d", code)
	}
	if err := a.reload(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing file was accepted")
	}
	want := `
# HELP tileproxy_config_reloads_total Configuration reloads (SIGHUP) by result (ok, error).
# TYPE tileproxy_config_reloads_total counter
tileproxy_config_reloads_total{result="error"} 2
tileproxy_config_reloads_total{result="ok"} 1
`
	if err := testutil.GatherAndCompare(a.registry, strings.NewReader(want), "tileproxy_config_reloads_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(a.registry, "tileproxy_config_info"); err != nil || n != 1 {
		t.Errorf("config_info series: %d %v, want 1", n, err)
	}
}
