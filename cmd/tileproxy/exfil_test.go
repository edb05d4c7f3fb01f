package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// exfilRig is two replicas sharing one Redis behind HAProxy round robin,
// on MinIO.
type exfilRig struct {
	redis    *testenv.RedisProcess
	replicas []*served
	front    string
	secret   string
	yaml     string
	creds    []string
}

func newExfilRig(t *testing.T, onStoreError string) *exfilRig {
	mp := testenv.MinIO(t)
	bucket := mp.Bucket(t)
	objs := map[string]testenv.Object{}
	for _, prefix := range []string{"q", "o"} {
		for x := range 8 {
			for y := range 4 {
				objs[fmt.Sprintf("%s/3/%d/%d.png", prefix, x, y)] = testenv.Object{Body: bytes.Repeat([]byte{byte(x), byte(y)}, 512), ContentType: "image/png"}
			}
		}
	}
	mp.Put(t, bucket, objs)
	r := &exfilRig{redis: testenv.StartRedis(t), secret: strings.Repeat("x", 32)}
	r.yaml = processYAML(r.secret, mp.Endpoint, fmt.Sprintf(`limits:
  store: %q
  on_store_error: %s
  sweep: {distinct: 2000, per: 1h, action: block}
tilesets:
  - {name: quota, bucket: %s, prefix: q/, quota: {tiles: 200, per: 1h}, missing: empty}
  - {name: open, bucket: %s, prefix: o/, missing: empty}
`, r.redis.URL, onStoreError, bucket, bucket))
	r.creds = minioCreds(mp.AccessKey, mp.SecretKey)
	for range 2 {
		r.replicas = append(r.replicas, serveProcess(t, r.yaml, r.creds...))
	}
	r.front = startHAProxy(t, "    balance roundrobin", r.replicas)
	return r
}

func (r *exfilRig) token(t *testing.T, sub string) string {
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(r.secret), Tilesets: []string{"*"}, TTL: time.Hour, Subject: sub})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// getTile asks base for path with tok: the status and the Retry-After.
func getTile(t *testing.T, base, path, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// TestQuotaAcrossReplicas: a 200-tile quota holds across two replicas
// behind round robin: 200 tiles exactly (the store leases tiles, never
// past the quota: the over-admission bound is 0), then 429 with
// Retry-After; another principal is unaffected.
func TestQuotaAcrossReplicas(t *testing.T) {
	r := newExfilRig(t, "allow")
	greedy, other := r.token(t, "greedy"), r.token(t, "other")
	// One replica may still hold a few leased tiles after the other's
	// first 429; once they are used, both refuse.
	ok, last200 := 0, -1
	for i := range 600 {
		code, retry := getTile(t, r.front, "/tiles/quota/3/1/1.png", greedy)
		switch code {
		case 200:
			ok, last200 = ok+1, i
		case 429:
			if retry == "" {
				t.Fatalf("429 without Retry-After")
			}
		default:
			t.Fatalf("request %d: %d", i, code)
		}
	}
	if last200 >= 500 {
		t.Errorf("a tile was still answered at request %d of 600", last200)
	}
	if ok != 200 {
		t.Errorf("%d tiles answered on a 200-tile quota across 2 replicas", ok)
	}
	for range 20 {
		if code, _ := getTile(t, r.front, "/tiles/quota/3/1/1.png", other); code != 200 {
			t.Fatalf("another principal: %d", code)
		}
	}
}

// TestStoreOutageAcrossReplicas: with Redis stopped mid-run, tiles are
// served under allow and refused with 503 under deny, never a 500; after
// Redis is back, counting resumes.
func TestStoreOutageAcrossReplicas(t *testing.T) {
	for _, mode := range []string{"allow", "deny"} {
		t.Run(mode, func(t *testing.T) {
			r := newExfilRig(t, mode)
			tok := r.token(t, "outage-"+mode)
			for i := range 20 {
				if code, _ := getTile(t, r.front, fmt.Sprintf("/tiles/quota/3/%d/0.png", i%8), tok); code != 200 {
					t.Fatalf("before: %d", code)
				}
			}
			r.redis.Stop()
			codes := map[int]int{}
			for i := range 300 { // bounded; about 3 s of requests
				code, retry := getTile(t, r.front, fmt.Sprintf("/tiles/open/3/%d/1.png", i%8), tok)
				codes[code]++
				if code == 503 && retry == "" {
					t.Fatal("503 without Retry-After")
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("with Redis stopped (%s): %v", mode, codes)
			if codes[500] > 0 || len(codes) > 2 {
				t.Fatalf("answers while Redis was down: %v", codes)
			}
			switch {
			case mode == "allow" && codes[200] != 300:
				t.Errorf("allow: %v, want every tile served", codes)
			case mode == "deny" && codes[503] < 200:
				t.Errorf("deny: %v, want 503 soon after Redis went away", codes)
			}
			r.redis.Start(t)
			served := 0
			for i := range 300 {
				code, _ := getTile(t, r.front, fmt.Sprintf("/tiles/quota/3/%d/2.png", i%8), tok)
				if code == 200 {
					served++
				}
				if served >= 20 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if served < 20 {
				t.Fatalf("after Redis came back: %d tiles served", served)
			}
			// The quota tileset counts on in Redis: past 200 in all, it
			// refuses.
			n := 20 + served // the open tileset has no quota
			over := 0
			for range 200 - n + 1 {
				if code, _ := getTile(t, r.front, "/tiles/quota/3/0/0.png", tok); code == 429 {
					over++
				}
			}
			if over == 0 {
				t.Errorf("after the outage, %d more tiles on a 200-tile quota were never refused: counting did not resume", 200-n+1)
			}
		})
	}
}

// TestRevokeAcrossReplicas: `tileproxy revoke` refuses a subject on both
// replicas within a second, tokens already verified (and cached) too.
func TestRevokeAcrossReplicas(t *testing.T) {
	r := newExfilRig(t, "allow")
	leaked, other := r.token(t, "leaker"), r.token(t, "bystander")
	for _, rep := range r.replicas {
		if code, _ := getTile(t, rep.base, "/tiles/open/3/0/0.png", leaked); code != 200 {
			t.Fatalf("before: %d", code)
		}
	}
	var out, errb bytes.Buffer
	if rc := run([]string{"revoke", "-config", r.replicas[0].path, "-sub", "leaker"}, &out, &errb); rc != 0 {
		t.Fatalf("revoke: %d %s", rc, errb.String())
	}
	if strings.Contains(out.String()+errb.String(), r.secret) {
		t.Fatal("revoke printed the secret")
	}
	time.Sleep(time.Second)
	for i, rep := range r.replicas {
		req, _ := http.NewRequest("GET", rep.base+"/tiles/open/3/0/0.png", nil)
		req.Header.Set("Authorization", "Bearer "+leaked)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
			t.Errorf("replica %d a second after revoke: %d %q", i+1, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if code, _ := getTile(t, rep.base, "/tiles/open/3/0/0.png", other); code != 200 {
			t.Errorf("replica %d, another subject: %d", i+1, code)
		}
	}
}

// TestSweepAcrossReplicas: a sweep of 5,000 distinct tiles is flagged and
// blocked (distinct: 2000); 5,000 re-reads of one view are not.
func TestSweepAcrossReplicas(t *testing.T) {
	r := newExfilRig(t, "allow")
	viewer, sweeper := r.token(t, "viewer"), r.token(t, "sweeper")
	var wg sync.WaitGroup
	var viewerRefused, sweeperOK, sweeperBlocked, other atomic.Int64
	var next atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= 5000 {
					return
				}
				// One view: the same 32 tiles over and over.
				if code, _ := getTile(t, r.front, fmt.Sprintf("/tiles/open/3/%d/%d.png", i%8, i/8%4), viewer); code != 200 {
					viewerRefused.Add(1)
				}
				// A sweep: every tile of zoom 13 row by row.
				switch code, _ := getTile(t, r.front, fmt.Sprintf("/tiles/open/13/%d/%d.png", i%8192, i/8192), sweeper); code {
				case 200, 204:
					sweeperOK.Add(1)
				case 429:
					sweeperBlocked.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("sweeper: %d answered, %d blocked; viewer refused %d", sweeperOK.Load(), sweeperBlocked.Load(), viewerRefused.Load())
	if viewerRefused.Load() != 0 || other.Load() != 0 {
		t.Errorf("viewer refused %d times; %d other answers", viewerRefused.Load(), other.Load())
	}
	// HyperLogLog's error and the replicas' settles let a little more
	// than 2,000 through; never the sweep.
	if ok := sweeperOK.Load(); ok < 1800 || ok > 2600 {
		t.Errorf("the sweeper got %d tiles before the block; want about 2,000", ok)
	}
	if sweeperBlocked.Load() == 0 {
		t.Error("the sweep was never blocked")
	}
}
