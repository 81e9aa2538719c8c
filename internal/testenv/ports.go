package testenv

import (
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

// FreePort returns a TCP port that was free a moment ago on every
// interface. It is picked below the kernel's ephemeral range (32768 and up
// here), so that the servers a test starts afterwards on port 0 cannot be
// handed the same port before the code under test binds it. Another process
// can still take it; prefer handing a listener around when the code under
// test accepts one.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		if err := ln.Close(); err != nil {
			t.Fatalf("releasing free port %d: %v", port, err)
		}
		return port
	}
	t.Fatal("found no free port between 20000 and 32000")
	return 0
}

// FreeAddr returns "127.0.0.1:port" for a port FreePort found free.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// listenLoopback opens a listener on a random 127.0.0.1 port.
func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening on 127.0.0.1: %v", err)
	}
	return ln
}
