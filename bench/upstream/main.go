// Command upstream is the API stand-in of the load benchmark: it answers
// every request with a small JSON body, like a typical API read.
package main

import (
	"flag"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9501", "listen address")
	flag.Parse()
	body := []byte(`{"results":[{"id":"1","properties":{"email":"ada@example.com","firstname":"Ada"}}],"paging":null}` + "\n")
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})))
}
