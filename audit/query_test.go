package audit

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// trail is a few principals' lines, as the writer writes them.
func trail(t testing.TB, n int) []byte {
	var b []byte
	head, tt := lineHead("r1", "abc"), &timeText{}
	for i := range n {
		l := &Line{Time: time.Date(2026, 12, 1+i%3, 10, 0, i%60, 0, time.UTC), Seq: uint64(i), Principal: fmt.Sprintf("p%d", i%4),
			Tileset: "city", Path: fmt.Sprintf("14/%d/%d.png", 8190+i%5, 5447), Status: 200, Bytes: 4096, Cache: "HIT"}
		if i%10 == 9 {
			l.Status, l.Reason, l.Path = 403, "outside_grant", "3/4/2.png"
		}
		if i%17 == 0 {
			l.Tileset = "roads"
		}
		b = appendLine(b, l, head, tt, false)
	}
	return b
}

func TestReportPrincipal(t *testing.T) {
	r := NewReport(Query{Principal: "p1"})
	if err := r.Scan(bytes.NewReader(trail(t, 1000))); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	r.Write(&out)
	if r.Lines != 250 || r.Zooms[14] == 0 || r.Denials["outside_grant"] != 50 || r.First != "2026-12-01T10:00:09.000Z" || r.Last != "2026-12-03T10:00:53.000Z" {
		t.Fatalf("report:\n%s", out.String())
	}
	// 14/8190..8194/5447 is around London, and 3/4/2 was denied: not covered.
	if r.West < -0.05 || r.East > 0.05 || r.South < 51.5 || r.North > 51.53 {
		t.Errorf("bounds [%f %f %f %f]", r.West, r.South, r.East, r.North)
	}
}

func TestReportTile(t *testing.T) {
	r := NewReport(Query{Tileset: "city", Tile: "14/8191/5447", Since: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)})
	r.Scan(bytes.NewReader(trail(t, 1000)))
	want := 0
	for i := range 1000 {
		if i%5 == 1 && i%10 != 9 && i%17 != 0 && i%3 != 0 {
			want++
		}
	}
	if len(r.Sightings) != want {
		t.Fatalf("%d sightings, want %d", len(r.Sightings), want)
	}
	for _, s := range r.Sightings {
		if s.Time < "2026-12-02" || s.Principal == "" || s.Status != 200 {
			t.Fatalf("sighting %+v", s)
		}
	}
}

func TestReportTileset(t *testing.T) {
	r := NewReport(Query{Tileset: "roads"})
	r.Scan(bytes.NewReader(trail(t, 1000)))
	total := int64(0)
	for _, s := range r.Principals {
		total += s.Tiles + s.Denied
	}
	if len(r.Principals) != 4 || total != r.Lines || r.Lines != 59 {
		t.Fatalf("%d principals, %d lines", len(r.Principals), r.Lines)
	}
}

// BenchmarkScan is the trail's scan speed for a principal's question
// (MB/s: the goal is 200).
func BenchmarkScan(b *testing.B) {
	data := trail(b, 200_000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		r := NewReport(Query{Principal: "p1"})
		r.Scan(bytes.NewReader(data))
	}
}
