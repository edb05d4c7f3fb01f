package core

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDecideMatchesServeContent holds the core's conditional and range
// logic to net/http's ServeContent, which the proxy used before the core
// existed, over every combination of a table of header values: same
// status, same Content-Range, same body length. (412 and 416 now go
// through the proxy's one error mapping; their status is what must agree.)
func TestDecideMatchesServeContent(t *testing.T) {
	lm := time.Date(2026, 11, 27, 12, 4, 5, 0, time.UTC)
	dates := []string{"", lm.Format(timeFormat), lm.Add(-time.Hour).Format(timeFormat), lm.Add(time.Hour).Format(timeFormat),
		lm.Format(time.RFC850), "garbage"}
	tags := []string{"", `"abc"`, `W/"abc"`, `"other"`, `"other", "abc"`, "*", `garbage`, `"abc`}
	ranges := []string{"", "bytes=0-3", "bytes=2-", "bytes=-3", "bytes=-0", "bytes=5-1", "bytes=999-", "bytes=0-999",
		"bytes=abc", "items=0-1", "bytes=", "bytes=-", "bytes= 1 - 2 "}
	ifRanges := []string{"", `"abc"`, `W/"abc"`, `"other"`, lm.Format(timeFormat), lm.Add(time.Hour).Format(timeFormat)}
	n := 0
	for _, etag := range []string{`"abc"`, ""} {
		for _, mod := range []time.Time{lm, {}} {
			for _, size := range []int64{0, 7} {
				body := strings.Repeat("x", int(size))
				for _, im := range tags {
					for _, ius := range dates[:3] {
						for _, inm := range tags {
							for _, ims := range dates {
								for _, rg := range ranges {
									for _, ir := range ifRanges {
										if (im != "" && ius != "") || (inm != "" && ims != "" && ims != dates[1]) || (rg == "" && ir != "") {
											continue // prune combinations that test nothing new
										}
										c := Conditions{IfMatch: im, IfUnmodifiedSince: ius, IfNoneMatch: inm, IfModifiedSince: ims, Range: rg, IfRange: ir}
										n++
										compare(t, c, etag, mod, body)
									}
								}
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d combinations agree", n)
}

func compare(t *testing.T, c Conditions, etag string, mod time.Time, body string) {
	t.Helper()
	r := httptest.NewRequest("GET", "/t", nil)
	for k, v := range map[string]string{"If-Match": c.IfMatch, "If-Unmodified-Since": c.IfUnmodifiedSince, "If-None-Match": c.IfNoneMatch,
		"If-Modified-Since": c.IfModifiedSince, "Range": c.Range, "If-Range": c.IfRange} {
		if v != "" {
			r.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	w.Header().Set("Content-Type", "image/png")
	if etag != "" {
		w.Header().Set("Etag", etag)
	}
	http.ServeContent(w, r, "", mod, strings.NewReader(body))

	d, err := c.decide(etag, mod, int64(len(body)))
	var re *RangeError
	status, contentRange, length := d.status, d.contentRange, d.length
	switch {
	case errors.Is(err, ErrPreconditionFailed):
		status = http.StatusPreconditionFailed
	case errors.As(err, &re):
		status, contentRange, length = http.StatusRequestedRangeNotSatisfiable, "", 0
		if re.Size >= 0 {
			contentRange = "bytes */" + strconv.FormatInt(re.Size, 10)
		}
	case err != nil:
		t.Fatalf("%+v: %v", c, err)
	}
	wantLen := int64(w.Body.Len())
	if status >= 400 || status == http.StatusNotModified {
		wantLen, length = 0, 0
	}
	if status != w.Code || contentRange != w.Header().Get("Content-Range") || length != wantLen {
		t.Fatalf("etag %q mod %v size %d, %+v:\ncore %d %q %d bytes\nServeContent %d %q %d bytes",
			etag, !mod.IsZero(), len(body), c, status, contentRange, length, w.Code, w.Header().Get("Content-Range"), wantLen)
	}
}

// FuzzDecide: for any header values, the core agrees with ServeContent
// (the table above gives the seeds' shape), and never panics.
func FuzzDecide(f *testing.F) {
	f.Add(`"abc"`, "", `"abc"`, "", "bytes=0-3", "", int64(7))
	f.Add("", "Fri, 27 Nov 2026 12:04:05 GMT", "", "Fri, 27 Nov 2026 12:04:05 GMT", "bytes=-3", `"abc"`, int64(0))
	lm := time.Date(2026, 11, 27, 12, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, im, ius, inm, ims, rg, ir string, size int64) {
		if size < 0 || size > 1<<12 || strings.Contains(rg, ",") {
			return // the adapter drops multi-range requests
		}
		for _, v := range []string{im, ius, inm, ims, rg, ir} {
			if strings.ContainsAny(v, "\r\n\x00") || strings.TrimSpace(v) != v {
				return // not a header value net/http would hand over
			}
		}
		c := Conditions{IfMatch: im, IfUnmodifiedSince: ius, IfNoneMatch: inm, IfModifiedSince: ims, Range: rg, IfRange: ir}
		compare(t, c, `"abc"`, lm, strings.Repeat("x", int(size)))
	})
}
