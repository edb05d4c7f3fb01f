package e2e

import (
	"bufio"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/internal/worldtiles"
)

// TestDemoScopedToACountry opens the demo's second link, whose token is
// scoped to one country (an area the demo builds from world-atlas at
// start), zoom 0-5: MapLibre draws only tiles that meet that country, the
// TileJSON's bounds frame it, and the console shows no error but the
// denied tiles'.
func TestDemoScopedToACountry(t *testing.T) {
	bin := buildDemo(t)
	eachTransport(t, func(t *testing.T, tr transport) { testDemoScoped(t, bin, tr) })
}

func testDemoScoped(t *testing.T, bin string, tr transport) {
	d := startDemo(t, bin, tr)
	// Every tile answer of the world tileset, from the access lines, and
	// how many came over another protocol than tr's.
	var mu sync.Mutex
	answers := map[string]int{}
	wrongProto := 0
	proto := map[bool]string{false: "proto=HTTP/1.1", true: "proto=HTTP/2.0"}[tr.https]
	line := regexp.MustCompile(`path=/tiles/world/(\d+)/(\d+)/(\d+)\.\w+ status=(\d+)`)
	go func() {
		sc := bufio.NewScanner(d.stderr)
		for sc.Scan() {
			if m := line.FindStringSubmatch(sc.Text()); m != nil {
				code, _ := strconv.Atoi(m[4])
				mu.Lock()
				answers[m[1]+"/"+m[2]+"/"+m[3]] = code
				if !strings.Contains(sc.Text(), proto) {
					wrongProto++
				}
				mu.Unlock()
			}
		}
	}()
	url := d.links[1]
	token := url[strings.Index(url, "#access_token=")+len("#access_token="):]
	outline, err := worldtiles.Country("Germany")
	if err != nil {
		t.Fatal(err)
	}
	country, err := area.Parse("country", outline)
	if err != nil {
		t.Fatal(err)
	}

	ctx, _ := browser(t, d.spki)
	var cmu sync.Mutex
	var consoleErrors []string
	chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			for _, a := range e.Args {
				msg += string(a.Value) + a.Description + " "
			}
		case *cdplog.EventEntryAdded:
			if e.Entry.Level != cdplog.EntryLevelError {
				return
			}
			msg = e.Entry.Text + " " + e.Entry.URL
		default:
			return
		}
		cmu.Lock()
		consoleErrors = append(consoleErrors, msg)
		cmu.Unlock()
	})
	idle := chromedp.Poll[chromedp.Void](`map && map.loaded() && map.areTilesLoaded() &&
		document.getElementById("status").textContent.includes("drawn with MapLibre")`,
		chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := idle(ctx, t)
		return err
	})); err != nil {
		t.Fatalf("the scoped map: %v", err)
	}
	// The country, framed by the TileJSON's bounds.
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	checkShot(t, shot, outDir(), "demo-scoped-"+tr.name, 3)
	// Closer in, the tiles at the source's deepest zoom (5) around the
	// country's edges: some meet it, some (inside its box) do not.
	settled := chromedp.Poll[chromedp.Void](`map.loaded() && map.areTilesLoaded()`,
		chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))
	for _, js := range []string{`map.jumpTo({zoom: 6.5, center: [6.5, 54.5]}); true`, `map.jumpTo({zoom: 6.5, center: [14.5, 47.6]}); true`} {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](js)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := settled(ctx, t)
			return err
		})); err != nil {
			t.Fatalf("after %s: %v", js, err)
		}
	}
	bounds, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](fmt.Sprintf(
		`fetch("/tiles/world.json", {headers: {Authorization: "Bearer %s"}}).then(r => r.json()).then(j => j.bounds)`, token),
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	b := country.Bound()
	if len(bounds) != 4 || bounds[0] < b.Min[0]-0.01 || bounds[1] < b.Min[1]-0.01 || bounds[2] > b.Max[0]+0.01 || bounds[3] > b.Max[1]+0.01 ||
		bounds[2]-bounds[0] < (b.Max[0]-b.Min[0])*0.99 {
		t.Errorf("TileJSON bounds %v do not frame the country %v", bounds, b)
	}
	time.Sleep(300 * time.Millisecond) // the access log flushes every 100 ms
	mu.Lock()
	served := 0
	for tile, code := range answers {
		var z, x, y int
		fmt.Sscanf(tile, "%d/%d/%d", &z, &x, &y)
		in := country.Intersects(uint8(z), uint32(x), uint32(y))
		switch {
		case code == 200 && !in:
			t.Errorf("tile %s was served, but does not meet the country", tile)
		case code == 200:
			served++
		case code != 403 && code != 304:
			t.Errorf("tile %s answered %d", tile, code)
		}
	}
	if wrongProto != 0 {
		t.Errorf("%d tile answers did not come over %s", wrongProto, proto)
	}
	mu.Unlock()
	if served == 0 {
		t.Fatal("no tile of the country was drawn")
	}
	cmu.Lock()
	defer cmu.Unlock()
	for _, m := range consoleErrors {
		if !strings.Contains(m, "403") && !strings.Contains(m, "Forbidden") && !strings.Contains(m, "favicon.ico") {
			t.Errorf("console error beyond the denied tiles: %s", m)
		}
	}
	t.Logf("%d tiles served, %d answers, %d console errors (denied tiles, favicon)", served, len(answers), len(consoleErrors))
}
