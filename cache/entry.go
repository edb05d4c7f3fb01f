package cache

import (
	"bytes"
	"io"
	"sync/atomic"
	"time"

	"github.com/tileproxy/tileproxy/cache/internal/memfile"
)

// Meta is what the cache keeps of an object besides its body. The values
// are header text, rendered once by whoever built the entry (the tile
// core), so that a hit formats nothing; the cache itself reads only ETag,
// to revalidate with. In an Entry that Get returned they are copies, made
// per lookup in one allocation: they stay valid after Release, whoever
// keeps them (a ResponseRecorder, a logging middleware, the SDK's
// transport sending an If-None-Match).
type Meta struct {
	ContentType     string
	ContentEncoding string
	ETag            string
	// LastModified is the Last-Modified header value, "" when unknown.
	LastModified string
	// ContentLength is the body's length as header text.
	ContentLength string
	// Modified is LastModified as a time, for conditional requests.
	Modified time.Time
}

// fields are Meta's header values in the one order a record keeps them
// (record.lens): the only place that order is written.
func (m *Meta) fields() [5]*string {
	return [5]*string{&m.ContentType, &m.ContentEncoding, &m.ETag, &m.LastModified, &m.ContentLength}
}

// Entry is an object: built by a LoadFunc with NewEntry (its body on the
// heap), or returned by Get, held for the caller, with its text and body
// in the cache's own memory (see record).
//
// The caller must call Release once done with an entry Get returned; the
// cache holds each entry it keeps, and drops that hold when the entry
// leaves (eviction, replacement, removal). The last release frees the
// entry's memory at once. Every copy of an Entry shares its one hold, so
// a second Release, through any copy, does nothing. Entries built with
// NewEntry need no Release, but the call works for them.
type Entry struct {
	h    *hold // the caller's hold, when Get returned the entry
	meta Meta
	body []byte       // heap (NewEntry) or arena bytes; nil when in the file
	file memfile.Span // the body when in the memory file
	// inFile: the body is file, not body.
	inFile bool
	// large marks an object over max_object_bytes: nothing is cached but
	// the fact, so later requests stream it straight away.
	large bool
	// negative marks a remembered miss.
	negative bool
}

// hold is one caller's hold on a cached record. It lives on the heap,
// apart from the Entry, so that copies of the Entry share it and release
// it once.
type hold struct {
	c    *Cache
	rec  *record
	idx  uint32
	done atomic.Bool
}

// NewEntry builds an Entry for an object body and its metadata. The
// entry owns body from now on: the caller must not change it.
func NewEntry(body []byte, meta Meta) *Entry {
	return &Entry{body: body, meta: meta}
}

// NewLargeEntry marks an object too large to cache, without its body.
func NewLargeEntry() *Entry { return &Entry{large: true} }

// Meta is the object's metadata (see Meta on how long its text lives).
func (e *Entry) Meta() Meta { return e.meta }

// Large reports an object over max_object_bytes, whose body is not kept.
func (e *Entry) Large() bool { return e.large }

// Len is the body's length.
func (e *Entry) Len() int64 {
	if e.inFile {
		return e.file.N
	}
	return int64(len(e.body))
}

// InFile reports a body kept in the memory file, which WriteTo sends
// with sendfile when w can.
func (e *Entry) InFile() bool { return e.inFile }

// WriteTo writes the body to w: from memory in one Write, from the
// memory file through w's ReadFrom when it has one (sendfile). As with
// groupcache's ByteView, the bytes are handed to w, which must not
// change them (no io.Writer may).
func (e *Entry) WriteTo(w io.Writer) (int64, error) {
	if !e.inFile {
		n, err := w.Write(e.body)
		return int64(n), err
	}
	return io.Copy(w, e.h.c.files.Section(e.file, 0, e.file.N))
}

// NewRangeReader reads n bytes of the body from off (a Range answer),
// wherever it is kept; a memory-file section still goes out with
// sendfile. Read it only until Release.
func (e *Entry) NewRangeReader(off, n int64) *io.SectionReader {
	if e.inFile {
		return e.h.c.files.Section(e.file, off, n)
	}
	return io.NewSectionReader(bytes.NewReader(e.body), off, n)
}

// Release drops the caller's hold on the entry (see Entry), after the
// last read of its body. Only the first call, through any copy, does so.
func (e *Entry) Release() {
	if e != nil && e.h != nil && e.h.done.CompareAndSwap(false, true) {
		e.h.c.release(e.h.idx, e.h.rec)
	}
}

// rec is the record of a held entry.
func (e *Entry) rec() *record { return e.h.rec }

// entry is the Entry for record i, which the caller holds. The header
// text is copied out of the arena in one string: values that outlive the
// hold can never show another entry's bytes.
func (c *Cache) entry(i uint32, r *record) Entry {
	e := Entry{h: &hold{c: c, rec: r, idx: i}, large: r.is(fLarge), negative: r.is(fNegative)}
	if r.blobLen == 0 {
		return e
	}
	b := c.arena.Bytes(r.blob, int(r.blobLen))
	p := int(r.keyLen)
	n := 0
	for _, l := range r.lens {
		n += int(l)
	}
	text := string(b[p : p+n])
	p += n
	e.meta = cutMeta(text, r.lens)
	if r.is(fHasMod) {
		e.meta.Modified = time.Unix(0, r.mod).UTC()
	}
	if r.is(fFile) {
		e.file, e.inFile = r.file, true
	} else if !e.large && !e.negative {
		e.body = b[p:]
	}
	return e
}

// cutMeta cuts text into the header values, whose lengths are lens in
// the order of Meta.fields.
func cutMeta(text string, lens [5]uint16) Meta {
	var m Meta
	for j, f := range m.fields() {
		*f, text = text[:lens[j]], text[lens[j]:]
	}
	return m
}
