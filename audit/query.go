package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Query asks one of the trail's questions: who saw a tile (Tile set),
// what a principal saw (Principal set), or who saw a tileset (Tileset
// alone), between Since and Until (zero: unbounded).
type Query struct {
	Principal string // a principal hash, or a subject with subjects: clear
	Tileset   string
	// Tile is z/x/y within Tileset.
	Tile         string
	Since, Until time.Time
}

// record is what a report reads of a line.
type record struct {
	Time      string `json:"time"`
	Replica   string `json:"replica"`
	Principal string `json:"principal"`
	Iss       string `json:"iss"`
	Sub       string `json:"sub"`
	Tileset   string `json:"tileset"`
	Path      string `json:"path"`
	Status    int    `json:"status"`
	Bytes     int64  `json:"bytes"`
	Reason    string `json:"reason"`
}

// Report accumulates the answer to a Query over any number of files, in
// memory bounded by what it reports (zooms, reasons, tilesets, and for a
// tileset query its principals), never by the trail's size.
type Report struct {
	q      Query
	needle [][]byte // every one must be in a line for it to be decoded

	// Lines matched, and bytes scanned.
	Lines, Scanned int64
	// For a tile: each sighting, in the order read.
	Sightings []Sighting
	// For a principal: what it saw.
	Zooms       map[int]int64 // tiles answered (200/206) per zoom
	Denials     map[string]int64
	Tilesets    map[string]int64
	First, Last string
	// Bounds covered, degrees: west, south, east, north (NaN: none).
	West, South, East, North float64
	// For a tileset: per principal.
	Principals map[string]*PrincipalSummary
}

// Sighting is one answer of a tile to a principal.
type Sighting struct {
	Time, Replica, Principal, Subject string
	Status                            int
	Reason                            string
}

// PrincipalSummary is one principal's share of a tileset.
type PrincipalSummary struct {
	Tiles, Denied int64
	First, Last   string
}

// NewReport starts the report of q.
func NewReport(q Query) *Report {
	r := &Report{q: q, Zooms: map[int]int64{}, Denials: map[string]int64{}, Tilesets: map[string]int64{},
		Principals: map[string]*PrincipalSummary{}, West: math.NaN(), South: math.NaN(), East: math.NaN(), North: math.NaN()}
	// Lines are pre-filtered on their raw bytes, so that the lines that
	// cannot match are never decoded: the scan runs at the speed of
	// bytes.Contains.
	if q.Tileset != "" {
		r.needle = append(r.needle, []byte(`"tileset":`+quote(q.Tileset)))
	}
	if q.Tile != "" {
		r.needle = append(r.needle, []byte(`"path":`+strings.TrimSuffix(quote(q.Tile+"."), `"`)))
	}
	if q.Principal != "" {
		r.needle = append(r.needle, []byte(strings.Trim(quote(q.Principal), `"`)))
	}
	return r
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// Scan reads one file's lines (JSON Lines; empty lines skipped).
func (r *Report) Scan(in io.Reader) error {
	br := bufio.NewReaderSize(in, 1<<20)
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line over 1 MiB is no line of ours: skip it whole.
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			continue
		}
		r.Scanned += int64(len(line))
		if len(line) > 1 {
			r.line(line)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (r *Report) line(line []byte) {
	for _, n := range r.needle {
		if !bytes.Contains(line, n) {
			return
		}
	}
	var rec record
	if json.Unmarshal(line, &rec) != nil {
		return
	}
	if !r.q.Since.IsZero() || !r.q.Until.IsZero() {
		t, err := time.Parse(time.RFC3339Nano, rec.Time)
		if err != nil || (!r.q.Since.IsZero() && t.Before(r.q.Since)) || (!r.q.Until.IsZero() && !t.Before(r.q.Until)) {
			return
		}
	}
	if r.q.Principal != "" && rec.Principal != r.q.Principal && rec.Sub != r.q.Principal {
		return
	}
	z, x, y, isTile := tileOf(rec.Path)
	if r.q.Tile != "" && (!isTile || fmt.Sprintf("%d/%d/%d", z, x, y) != r.q.Tile) {
		return
	}
	r.Lines++
	ok := rec.Status == 200 || rec.Status == 206
	switch {
	case r.q.Tile != "":
		r.Sightings = append(r.Sightings, Sighting{Time: rec.Time, Replica: rec.Replica, Principal: rec.Principal, Subject: rec.Sub, Status: rec.Status, Reason: rec.Reason})
	case r.q.Principal != "":
		if r.First == "" || rec.Time < r.First {
			r.First = rec.Time
		}
		if rec.Time > r.Last {
			r.Last = rec.Time
		}
		if rec.Reason != "" {
			r.Denials[rec.Reason]++
		}
		if ok {
			r.Tilesets[rec.Tileset]++
			if isTile {
				r.Zooms[int(z)]++
				r.cover(z, x, y)
			}
		}
	default:
		key := rec.Principal
		if key == "" {
			key = "(no token)"
		}
		s := r.Principals[key]
		if s == nil {
			s = &PrincipalSummary{First: rec.Time}
			r.Principals[key] = s
		}
		if ok {
			s.Tiles++
		} else if rec.Reason != "" {
			s.Denied++
		}
		s.First, s.Last = min(s.First, rec.Time), max(s.Last, rec.Time)
	}
}

// cover widens the bounds to tile z/x/y.
func (r *Report) cover(z uint8, x, y uint32) {
	n := float64(uint64(1) << z)
	lon := func(x float64) float64 { return x/n*360 - 180 }
	lat := func(y float64) float64 { return math.Atan(math.Sinh(math.Pi*(1-2*y/n))) * 180 / math.Pi }
	w, e, nn, s := lon(float64(x)), lon(float64(x+1)), lat(float64(y)), lat(float64(y+1))
	if math.IsNaN(r.West) {
		r.West, r.South, r.East, r.North = w, s, e, nn
		return
	}
	r.West, r.South, r.East, r.North = min(r.West, w), min(r.South, s), max(r.East, e), max(r.North, nn)
}

// Write prints the report for a person.
func (r *Report) Write(w io.Writer) {
	switch {
	case r.q.Tile != "":
		fmt.Fprintf(w, "who saw %s/%s: %d answers\n", r.q.Tileset, r.q.Tile, len(r.Sightings))
		for _, s := range r.Sightings {
			who := s.Principal
			if s.Subject != "" {
				who += " (" + s.Subject + ")"
			}
			if who == "" {
				who = "(no token)"
			}
			fmt.Fprintf(w, "%s  %-8s  %s  %d %s\n", s.Time, s.Replica, who, s.Status, s.Reason)
		}
	case r.q.Principal != "":
		fmt.Fprintf(w, "principal %s: %d answers", r.q.Principal, r.Lines)
		if r.First != "" {
			fmt.Fprintf(w, ", first %s, last %s", r.First, r.Last)
		}
		fmt.Fprintln(w)
		for _, ts := range sortedKeys(r.Tilesets) {
			fmt.Fprintf(w, "  tileset %s: %d tiles\n", ts, r.Tilesets[ts])
		}
		zs := make([]int, 0, len(r.Zooms))
		for z := range r.Zooms {
			zs = append(zs, z)
		}
		slices.Sort(zs)
		for _, z := range zs {
			fmt.Fprintf(w, "  zoom %2d: %d tiles\n", z, r.Zooms[z])
		}
		if !math.IsNaN(r.West) {
			fmt.Fprintf(w, "  bounds covered: [%.5f, %.5f, %.5f, %.5f]\n", r.West, r.South, r.East, r.North)
		}
		for _, reason := range sortedKeys(r.Denials) {
			fmt.Fprintf(w, "  denied %s: %d\n", reason, r.Denials[reason])
		}
	default:
		fmt.Fprintf(w, "tileset %s: %d answers, %d principals\n", r.q.Tileset, r.Lines, len(r.Principals))
		keys := make([]string, 0, len(r.Principals))
		for k := range r.Principals {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { return int(r.Principals[b].Tiles - r.Principals[a].Tiles) })
		for _, k := range keys {
			s := r.Principals[k]
			fmt.Fprintf(w, "  %s: %d tiles, %d denied, %s to %s\n", k, s.Tiles, s.Denied, s.First, s.Last)
		}
	}
	fmt.Fprintf(w, "(%s of trail read)\n", strconv.FormatFloat(float64(r.Scanned)/(1<<20), 'f', 1, 64)+" MiB")
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// tileOf reads z/x/y from a path "{z}/{x}/{y}.{ext}".
func tileOf(path string) (z uint8, x, y uint32, ok bool) {
	var n [3]uint64
	i := 0
	for k := range n {
		start := i
		for i < len(path) && path[i] >= '0' && path[i] <= '9' && i-start < 10 {
			n[k] = n[k]*10 + uint64(path[i]-'0')
			i++
		}
		sep := byte('/')
		if k == 2 {
			sep = '.'
		}
		if i == start || i >= len(path) || path[i] != sep {
			return 0, 0, 0, false
		}
		i++
	}
	if n[0] > 30 || n[1] >= 1<<n[0] || n[2] >= 1<<n[0] {
		return 0, 0, 0, false
	}
	return uint8(n[0]), uint32(n[1]), uint32(n[2]), true
}
