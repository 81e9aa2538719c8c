package hostmap

import (
	"context"
	"net"
	"testing"
)

// Unset, nothing is redirected and linkgate's clients keep their defaults;
// set, named addresses and (with a fallback) other host names are, but
// never an IP literal or localhost, which tests' own servers use.
func TestRedirect(t *testing.T) {
	if _, ok := Redirect("acme.zendesk.com:443"); ok || Transport() != nil {
		t.Fatal("an unset map redirects")
	}
	restore := Set(&Map{Addrs: map[string]string{"acme.zendesk.com:443": "127.0.0.1:1001"}, Fallback: "127.0.0.1:1002"})
	cases := map[string]string{
		"ACME.zendesk.com:443":  "127.0.0.1:1001",
		"acme.zendesk.com:8443": "127.0.0.1:1002",
		"evil.example.com:443":  "127.0.0.1:1002",
		"127.0.0.1:9000":        "",
		"[::1]:9000":            "",
		"localhost:9000":        "",
	}
	for addr, want := range cases {
		got, ok := Redirect(addr)
		if got != want || ok != (want != "") {
			t.Errorf("Redirect(%q) = %q %v, want %q", addr, got, ok, want)
		}
	}
	if Transport() == nil {
		t.Error("a set map gives no transport")
	}
	restore()
	if _, ok := Redirect("acme.zendesk.com:443"); ok {
		t.Fatal("restore left the map in place")
	}
}

// The dialer sends a redirected address to its target and any other to the
// wrapped dial.
func TestDialer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	defer Set(&Map{Addrs: map[string]string{"api.example.com:443": l.Addr().String()}})()
	var wrapped []string
	dial := Dialer(func(_ context.Context, _, addr string) (net.Conn, error) {
		wrapped = append(wrapped, addr)
		return nil, &net.OpError{Op: "dial"}
	})
	c, err := dial(context.Background(), "tcp", "api.example.com:443")
	if err != nil {
		t.Fatalf("redirected dial: %v", err)
	}
	c.Close()
	if _, err := dial(context.Background(), "tcp", "other.example.com:443"); err == nil || len(wrapped) != 1 || wrapped[0] != "other.example.com:443" {
		t.Fatalf("an unnamed address did not go to the wrapped dial: %v %v", err, wrapped)
	}
}
