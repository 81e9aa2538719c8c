package linkflow

import (
	"net/url"
	"testing"
)

func TestOriginOfMatchesBrowsers(t *testing.T) {
	for in, want := range map[string]string{
		"https://App.Example.com/cb?x=1": "https://app.example.com",
		"https://app.example.com:443/":   "https://app.example.com",
		"http://localhost:80/x":          "http://localhost",
		"http://localhost:8080/x":        "http://localhost:8080",
		"https://app.example.com:8443":   "https://app.example.com:8443",
		"http://[::1]:80/":               "http://[::1]",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := originOf(u); got != want {
			t.Errorf("originOf(%s) = %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"app.example.com", "https://app.example.com/path", "ftp://x", "https://u:p@x.example"} {
		if _, err := normalizeOrigin(bad); err == nil {
			t.Errorf("normalizeOrigin(%q) accepted", bad)
		}
	}
}
