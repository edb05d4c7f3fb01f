package core

import "strings"

// safeTypes are the media types passed through from S3: tile and metadata
// formats a browser will not run as a document. Anything else (text/html,
// image/svg+xml, application/javascript, ...) is sent as
// application/octet-stream: whoever can write one object under any prefix
// must not be able to run script on tileproxy's origin, where the session
// cookie lives.
var safeTypes = map[string]string{
	"image/png":                          "image/png",
	"image/jpeg":                         "image/jpeg",
	"image/webp":                         "image/webp",
	"image/avif":                         "image/avif",
	"image/gif":                          "image/gif",
	"application/vnd.mapbox-vector-tile": "application/vnd.mapbox-vector-tile",
	"application/x-protobuf":             "application/x-protobuf",
	"application/protobuf":               "application/protobuf",
	"application/vnd.google.protobuf":    "application/vnd.google.protobuf",
	"application/json":                   "application/json",
	"application/geo+json":               "application/geo+json",
	"application/octet-stream":           "application/octet-stream",
}

// contentTypes by extension, for objects stored without a useful type.
var contentTypes = map[string]string{
	"png":  "image/png",
	"jpg":  "image/jpeg",
	"jpeg": "image/jpeg",
	"webp": "image/webp",
	"pbf":  "application/vnd.mapbox-vector-tile",
	"mvt":  "application/vnd.mapbox-vector-tile",
	"json": "application/json",
}

// contentType keeps S3's type when it is a safe one (its media type
// alone, without parameters), falls back to the key's extension when S3
// has only the generic type it gives uploads that did not say, and sends
// anything else as application/octet-stream.
func contentType(stored, key string) string {
	mt, _, _ := strings.Cut(stored, ";")
	mt = strings.TrimSpace(mt)
	switch {
	case mt == "", strings.EqualFold(mt, "binary/octet-stream"), strings.EqualFold(mt, "application/octet-stream"):
	default:
		if t, ok := safeTypes[mt]; ok {
			return t
		}
		if t, ok := safeTypes[strings.ToLower(mt)]; ok {
			return t
		}
		return "application/octet-stream"
	}
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		if ct, ok := contentTypes[strings.ToLower(key[i+1:])]; ok {
			return ct
		}
	}
	return "application/octet-stream"
}
