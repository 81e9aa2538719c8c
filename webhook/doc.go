// Package webhook tells the application what happened to its integrated
// accounts: above all integrated_account:authentication_error, once per
// incident, signed, and even across crashes.
//
// Events are written to the store's outbox in the same transaction as the
// account change that causes them (tokenstore.EventsFor). A Dispatcher fans
// each event out to the endpoints whose filter matches it, claims due
// deliveries with a lease (so several linkgate instances sharing a store
// never send one delivery at the same time), and posts them with Standard
// Webhooks headers and Truto's X-Truto-Signature. Failures are retried on
// Standard Webhooks' schedule with jitter, honouring Retry-After; a 410 Gone
// disables the endpoint. Delivery is at least once: receivers dedupe on the
// webhook-id header, which is the event id and never changes across retries
// and redeliveries.
//
// Wiring it up:
//
//	d := webhook.NewDispatcher(store, endpoints, webhook.Options{Logger: log, Emit: emit})
//	if err := d.Start(); err != nil { … }       // validates endpoints, starts the loop
//	…
//	store.UpdateAccount(ctx, a, tokenstore.EventsFor(change, a, now))
//	d.Notify()                                  // send now rather than at the next poll
//	…
//	d.Stop(ctx)                                 // waits for sends in flight, bounded by ctx
//
// Each endpoint has its own workers (Options.Concurrency), so a slow or dead
// receiver delays nobody else. Deliveries are not ordered: an account's
// authentication_error and a later reactivated may arrive in either order
// after retries, so receivers should trust the payload's status and
// updated_at rather than the arrival order.
//
// NewAPI serves the delivery log, test events and redelivery.
//
// Receivers written in Go check a delivery with Verify (see the example);
// receivers in other languages use any Standard Webhooks library with the
// same whsec_ secret, or check X-Truto-Signature as they do for Truto.
package webhook
