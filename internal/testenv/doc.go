// Package testenv starts the real components linkgate's tests run against:
// an OAuth 2 authorization server built on ory/fosite, a third-party API
// stand-in that checks the credentials linkgate injects, and a webhook
// receiver. Every component listens on 127.0.0.1 on a random port and stops
// in t.Cleanup, so a test only has to construct what it needs.
//
// The components behave like real providers rather than like mocks: the
// authorization server rotates refresh tokens and revokes a whole grant when
// a used refresh token is presented again, exactly as fosite (and Salesforce,
// among others) do, and the fault switches change what goes over the wire,
// not what linkgate's code is told.
package testenv
