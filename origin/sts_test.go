package origin_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
)

// fakeSTS issues credentials that live for ttl, and can be taken down.
type fakeSTS struct {
	ttl      time.Duration
	down     atomic.Bool
	calls    atomic.Int64
	mu       sync.Mutex // protects issued and policies
	issued   map[string]time.Time
	policies []string
	seq      int
}

func (f *fakeSTS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	if f.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	r.ParseForm()
	if r.Form.Get("Action") != "AssumeRole" {
		http.Error(w, "bad action", 400)
		return
	}
	f.mu.Lock()
	f.seq++
	key := fmt.Sprintf("ASIAFAKE%04d", f.seq)
	exp := time.Now().Add(f.ttl)
	f.issued[key] = exp
	f.policies = append(f.policies, r.Form.Get("Policy")+" session="+r.Form.Get("RoleSessionName")+" duration="+r.Form.Get("DurationSeconds")+" ext="+r.Form.Get("ExternalId"))
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleResult><Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>secret-%s</SecretAccessKey>
<SessionToken>token-%s</SessionToken><Expiration>%s</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>
</AssumeRoleResult><ResponseMetadata><RequestId>req-%d</RequestId></ResponseMetadata></AssumeRoleResponse>`,
		key, key, key, exp.UTC().Format(time.RFC3339Nano), f.seq)
}

var credRE = regexp.MustCompile(`Credential=([A-Z0-9]+)/`)

// fakeS3 answers every GET with a tile, and counts requests signed with
// credentials it does not know or that have expired.
type fakeS3 struct {
	sts     *fakeSTS
	expired atomic.Int64
	unknown atomic.Int64
	ok      atomic.Int64
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := credRE.FindStringSubmatch(r.Header.Get("Authorization"))
	f.sts.mu.Lock()
	exp, known := time.Time{}, false
	if m != nil {
		exp, known = f.sts.issued[m[1]]
	}
	f.sts.mu.Unlock()
	switch {
	case !known:
		f.unknown.Add(1)
		w.WriteHeader(403)
		io.WriteString(w, `<Error><Code>InvalidAccessKeyId</Code></Error>`)
	case time.Now().After(exp):
		f.expired.Add(1)
		w.WriteHeader(400)
		io.WriteString(w, `<Error><Code>ExpiredToken</Code></Error>`)
	default:
		f.ok.Add(1)
		w.Header().Set("ETag", `"abc"`)
		w.Header().Set("Content-Type", "image/png")
		io.WriteString(w, "tile")
	}
}

func stsOrigin(t *testing.T, ttl time.Duration) (*origin.S3, *fakeSTS, *fakeS3, *atomic.Int64) {
	t.Helper()
	return stsOriginClock(t, ttl, time.Now)
}

// stsOriginClock is stsOrigin with the origin's refresh clock.
func stsOriginClock(t *testing.T, ttl time.Duration, now func() time.Time) (*origin.S3, *fakeSTS, *fakeS3, *atomic.Int64) {
	t.Helper()
	sts := &fakeSTS{ttl: ttl, issued: map[string]time.Time{}}
	stsSrv := httptest.NewServer(sts)
	t.Cleanup(stsSrv.Close)
	s3f := &fakeS3{sts: sts}
	s3Srv := httptest.NewServer(s3f)
	t.Cleanup(s3Srv.Close)
	cfg := config.Default()
	cfg.S3.Endpoint = s3Srv.URL
	cfg.S3.STSEndpoint = stsSrv.URL
	cfg.S3.UsePathStyle = true
	cfg.S3.RoleARN = "arn:aws:iam::123456789012:role/tileproxy-read"
	cfg.S3.ExternalID = "ext-42"
	cfg.Tilesets = []config.Tileset{{Name: "city", Bucket: "tiles", Prefix: "city/"}}
	cfg.ApplyDefaults()
	var assumeErrs atomic.Int64
	o, err := origin.New(t.Context(), &cfg, origin.Deps{
		Credentials: credentials.NewStaticCredentialsProvider("BASE", "base-secret", ""),
		Now:         now,
		OnAssumeRole: func(_ string, err error, _ time.Time) {
			if err != nil {
				assumeErrs.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return o, sts, s3f, &assumeErrs
}

func fetch(t *testing.T, o *origin.S3) error {
	obj, err := o.Get(t.Context(), origin.Request{Tileset: "city", Bucket: "tiles", Key: "city/0/0/0.png"})
	if err != nil {
		return err
	}
	io.Copy(io.Discard, obj.Body)
	return obj.Body.Close()
}

func TestSTSRequestParameters(t *testing.T) {
	o, sts, _, _ := stsOrigin(t, time.Hour)
	if err := fetch(t, o); err != nil {
		t.Fatal(err)
	}
	sts.mu.Lock()
	defer sts.mu.Unlock()
	got := sts.policies[0]
	for _, want := range []string{`"arn:aws:s3:::tiles/city/*"`, `"s3:GetObject"`, "session=tileproxy-city", "duration=3600", "ext=ext-42"} {
		if !strings.Contains(got, want) {
			t.Errorf("AssumeRole request lacks %s: %s", want, got)
		}
	}
}

// TestSTSColdCrowd: over real HTTP with the SDK's own credential cache
// in between, 100 concurrent cold requests make one AssumeRole call and
// are all signed with credentials S3 accepts. When refreshes happen over
// a credential's life is TestRoleCredentialsRefreshAhead's, on a fake clock.
func TestSTSColdCrowd(t *testing.T) {
	o, sts, s3f, _ := stsOrigin(t, time.Hour)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 100 {
		wg.Go(func() {
			if err := fetch(t, o); err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := sts.calls.Load(); n != 1 {
		t.Fatalf("100 concurrent cold requests made %d AssumeRole calls, want 1", n)
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed", n)
	}
	if n := s3f.expired.Load() + s3f.unknown.Load(); n != 0 {
		t.Errorf("%d requests were signed with expired or unknown credentials", n)
	}
}

// TestSTSDownThenBack: while STS is down requests fail fast with
// ErrUnavailable and back off instead of hammering it; once it answers
// again the first request after the backoff recovers (on a fake clock).
func TestSTSDownThenBack(t *testing.T) {
	clk := testenv.NewClock(time.Now())
	o, sts, _, assumeErrs := stsOriginClock(t, time.Hour, clk.Now)
	sts.down.Store(true)
	err := fetch(t, o)
	var oe *origin.Error
	if !errors.Is(err, origin.ErrUnavailable) || !errors.As(err, &oe) || oe.Op != "AssumeRole" {
		t.Fatalf("STS down: got %v, want ErrUnavailable from AssumeRole", err)
	}
	// While backing off, requests fail fast without hammering STS.
	before := sts.calls.Load()
	for range 20 {
		fetch(t, o)
	}
	if n := sts.calls.Load() - before; n != 0 {
		t.Errorf("20 requests during backoff made %d STS calls", n)
	}
	if assumeErrs.Load() == 0 {
		t.Error("failed AssumeRole not reported")
	}
	sts.down.Store(false)
	if err := fetch(t, o); err == nil {
		t.Fatal("a request within the backoff asked STS again")
	}
	clk.Add(time.Minute) // past the longest backoff
	if err := fetch(t, o); err != nil {
		t.Fatalf("no recovery after STS came back and the backoff passed: %v", err)
	}
}
