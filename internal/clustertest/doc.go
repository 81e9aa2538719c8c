// Package clustertest runs linkgate as several real Caddy processes sharing
// one PostgreSQL database and checks what a cluster promises: one token
// refresh and one alarm per account across instances, nothing lost when an
// instance is killed, and recovery by itself when the database restarts.
//
// The tests need LINKGATE_TEST_POSTGRES (a DSN of a database they may
// create schemas in) and skip without it. They build ./cmd/caddy once per
// run.
package clustertest
