package accesslog

import (
	"strings"
	"testing"
)

const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"

func TestRedactTokens(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/tiles/a/0/0/0.png", "/tiles/a/0/0/0.png"},
		{"/tiles/a/0/0/0.png;access_token=" + jwt, "/tiles/a/0/0/0.png;access_token=" + Redacted},
		{"/tiles/a/" + jwt + "/0.png", "/tiles/a/" + Redacted + "/0.png"},
		{"/x/" + jwt + "/" + jwt, "/x/" + Redacted + "/" + Redacted},
		{"/t/" + jwt[:len(jwt)-10] + ".", "/t/" + Redacted}, // empty or cut signature
		{"/t/" + jwt + ".enc.tag", "/t/" + Redacted},        // JWE: five segments
		{"/tiles/v1.2.3/eee.e.e", "/tiles/v1.2.3/eee.e.e"},  // too short to be a token
		{"/tiles/elevation.terrain.png", "/tiles/elevation.terrain.png"},
		{"", ""},
	} {
		if got := RedactTokens(tc.in); got != tc.want {
			t.Errorf("RedactTokens(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestRedactTokensLinear(t *testing.T) {
	// A path of nothing but 'e's and dots must not cost quadratic time;
	// counted in steps, not seconds: allocations stand in for work here.
	s := "eyJ" + strings.Repeat("e", 8<<10) + "." + strings.Repeat("ee.", 4<<10)
	if got := RedactTokens(s); got == s {
		t.Fatal("a long JWT-shaped run was not redacted")
	}
	clean := strings.Repeat("/eeeee", 2<<10)
	if n := testing.AllocsPerRun(10, func() { RedactTokens(clean) }); n != 0 {
		t.Errorf("%v allocations for a path without a token", n)
	}
}

func FuzzRedactTokens(f *testing.F) {
	f.Add("/tiles/a/0/0/0.png;access_token=" + jwt)
	f.Add("eeeeeeee.ee.")
	f.Add("eyJeeeee.ee.")
	f.Fuzz(func(t *testing.T, s string) {
		got := RedactTokens(s)
		if strings.Contains(got, jwt) {
			t.Fatalf("token survived: %q", got)
		}
		if !strings.Contains(s, "e") && got != s {
			t.Fatalf("changed a string without a token: %q -> %q", s, got)
		}
		// Whatever is left holds no JWT-shaped run.
		if again := RedactTokens(got); again != got {
			t.Fatalf("redacting twice changed %q to %q", got, again)
		}
	})
}

func BenchmarkRedactTokensClean(b *testing.B) {
	for b.Loop() {
		RedactTokens("/tiles/demo/6/63/31.png")
	}
}
