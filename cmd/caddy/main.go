// Command caddy is Caddy with linkgate compiled in:
//
//	go run ./cmd/caddy run --config Caddyfile.example
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules, and linkgate.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/linkgate/linkgate"
)

func main() { caddycmd.Main() }
