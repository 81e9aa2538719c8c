// Package tokenstore keeps integrated accounts, their sealed credentials,
// link tokens and the webhook outbox. The Store interface has two
// implementations, SQLite (embedded, the default) and PostgreSQL (clusters),
// which pass the same conformance suite; Cached puts a ristretto cache of
// unsealed accounts in front of either.
package tokenstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/linkgate/linkgate/account"
)

// Errors a Store returns; callers test them with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrConflict    = errors.New("changed concurrently")
	ErrUsed        = errors.New("already used")
	ErrUnavailable = errors.New("store unavailable")
	// ErrInvalid is input the database refused as such (PostgreSQL's data
	// exceptions: a NUL or invalid UTF-8 in a text value, a value out of
	// range): the caller's fault, not the store's, so never a 503.
	ErrInvalid = errors.New("input the store cannot hold")
)

// Store is everything linkgate persists.
type Store interface {
	Accounts
	LinkTokens
	Outbox
	Environments
	// Close releases the store's connections. It does not wait for callers.
	Close() error
}

// Accounts stores integrated accounts. Every write takes the outbox events
// that the change causes, and writes them in the same transaction, so an
// event is never lost and never sent for a change that did not commit.
type Accounts interface {
	// CreateAccount stores a new account (ErrExists if its id is taken).
	// It sets a.Version to 1.
	CreateAccount(ctx context.Context, a *account.Account, events []Event) error
	// GetAccount reads one account with its unsealed credentials
	// (ErrNotFound if there is none).
	GetAccount(ctx context.Context, id string) (*account.Account, error)
	// UpdateAccount writes a when the stored version still equals a.Version
	// (ErrConflict otherwise, ErrNotFound if it is gone), then increments
	// a.Version.
	UpdateAccount(ctx context.Context, a *account.Account, events []Event) error
	// DeleteAccount removes an account (ErrNotFound if there is none).
	DeleteAccount(ctx context.Context, id string, events []Event) error
	// ListAccounts returns one page of accounts, newest first, without
	// credentials and with their context's secrets redacted (listings
	// never decrypt): read an account with GetAccount before changing it.
	ListAccounts(ctx context.Context, f Filter) (Page, error)
	// ClaimExpiring returns the ids of up to limit active oauth2 accounts
	// with a refresh token whose access token expires before the given
	// time, soonest first, and leases them to the caller for lease so that
	// another sweeper sharing the store skips them meanwhile.
	ClaimExpiring(ctx context.Context, before time.Time, lease time.Duration, limit int) ([]string, error)
	// WithRefreshLock runs fn while holding the refresh lock of one account:
	// no other holder, in this process or another sharing the store, runs
	// at the same time for the same account. The wait is bounded by ctx; fn
	// gets a context that is not cancelled by ctx.
	WithRefreshLock(ctx context.Context, id string, fn func(ctx context.Context) error) error
}

// Filter selects accounts for ListAccounts. Empty fields match everything.
type Filter struct {
	Status      account.Status
	TenantID    string
	Integration string
	// Search matches an account id or tenant id by prefix.
	Search string
	// CreatedFrom and CreatedBefore, when set, keep the accounts created
	// at or after CreatedFrom and before CreatedBefore: bounds of the seek
	// in the listing's index, so a range far down the listing costs what
	// its first page does.
	CreatedFrom, CreatedBefore time.Time
	// Cursor is the NextCursor of the previous page.
	Cursor string
	// Limit is the page size; 0 means 100, the largest is 1000.
	Limit int
}

// Page is one page of a listing.
type Page struct {
	Accounts []*account.Account
	// NextCursor continues the listing; empty on the last page.
	NextCursor string
}

// LinkToken is a single-use grant for the end user to connect or reconnect an
// account. Only a hash of the token is stored.
type LinkToken struct {
	Hash []byte
	// AccountID is set for a reconnect, empty for a new connection.
	AccountID              string
	TenantID               string
	Integration            string
	RedirectURI            string
	Scopes                 []string
	Context                map[string]any
	PersistPreviousContext bool
	CreatedAt              time.Time
	ExpiresAt              time.Time
	UsedAt                 time.Time
}

// ConnectState is the OAuth state of one authorization request made from a
// link token. Verifier is the PKCE code verifier, a secret sealed at rest.
type ConnectState struct {
	Hash          []byte
	LinkTokenHash []byte
	Verifier      string
	RedirectURI   string
	ExpiresAt     time.Time
	// Integration is the integration the end user chose on the connect
	// page, for a link token that left the choice to them; empty when the
	// link token names its integration.
	Integration string
	// Connection holds the connection fields the end user gave on the
	// connect page before OAuth started (a subdomain), for the callback.
	// It is sealed with the verifier.
	Connection map[string]string
}

// connectSecret is the plaintext sealed in a connect state's verifier
// column: the verifier alone, as before connection fields existed, or a
// JSON object with both (a PKCE verifier never starts with "{").
func connectSecret(cs *ConnectState) []byte {
	if len(cs.Connection) == 0 {
		return []byte(cs.Verifier)
	}
	b, _ := json.Marshal(struct {
		Verifier   string            `json:"v"`
		Connection map[string]string `json:"c"`
	}{cs.Verifier, cs.Connection})
	return b
}

// openConnectSecret reads what connectSecret sealed.
func openConnectSecret(cs *ConnectState, pt []byte) error {
	if len(pt) == 0 || pt[0] != '{' {
		cs.Verifier = string(pt)
		return nil
	}
	var v struct {
		Verifier   string            `json:"v"`
		Connection map[string]string `json:"c"`
	}
	if err := json.Unmarshal(pt, &v); err != nil {
		return fmt.Errorf("connect state: %w", err)
	}
	cs.Verifier, cs.Connection = v.Verifier, v.Connection
	return nil
}

// ConnectStatesPerLinkToken is how many OAuth states of one link token a
// store keeps: the end user may press connect again (another tab, a closed
// popup) and finish any of the last few, but a script looping on the
// connect button cannot grow the store.
const ConnectStatesPerLinkToken = 5

// LinkTokens stores link tokens and connect states.
type LinkTokens interface {
	CreateLinkToken(ctx context.Context, lt *LinkToken) error
	// GetLinkToken reads a link token by the hash of its value.
	GetLinkToken(ctx context.Context, hash []byte) (*LinkToken, error)
	// CreateConnectState stores a state of a link token (ErrNotFound if
	// the link token does not exist) and, in the same transaction, deletes
	// the link token's older states beyond the newest ConnectStatesPerLinkToken:
	// it keeps the new state and those that expire last. However often a
	// link token is used to start a flow, its states take bounded room.
	CreateConnectState(ctx context.Context, s *ConnectState) error
	// TakeConnectState reads and deletes a state in one step: of two callers
	// with the same state exactly one gets it, the other ErrNotFound.
	TakeConnectState(ctx context.Context, hash []byte) (*ConnectState, error)
	// CompleteLink marks the link token used (ErrUsed if it already was) and
	// creates (create true) or updates a, with its events, in one
	// transaction.
	CompleteLink(ctx context.Context, linkTokenHash []byte, a *account.Account, create bool, events []Event) error
}

// Event is one outbox row: something that happened, to be delivered to every
// webhook endpoint whose filter matches it.
type Event struct {
	// ID is "evt_" and a UUID (time-ordered, version 7); it is the webhook-id receivers dedupe on.
	ID        string
	Name      string
	AccountID string
	// Payload is the JSON of the envelope's payload (a redacted account).
	Payload   []byte
	CreatedAt time.Time
}

// DeliveryStatus is where a delivery stands.
type DeliveryStatus string

// Delivery statuses.
const (
	DeliveryPending   DeliveryStatus = "pending"
	DeliveryDelivered DeliveryStatus = "delivered"
	DeliveryFailed    DeliveryStatus = "failed"
	// DeliveryRetrying is a filter, never a stored status: the pending
	// deliveries whose endpoint has already refused or missed an attempt,
	// so that a failing endpoint shows before its retries run out.
	DeliveryRetrying DeliveryStatus = "retrying"
)

// Delivery is one event to one endpoint.
type Delivery struct {
	ID            string
	Event         Event
	Endpoint      string
	Status        DeliveryStatus
	Attempts      int
	NextAttemptAt time.Time
	LastStatus    int
	LastError     string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	// LeaseUntil is the lease ClaimDeliveries gave this copy; FinishAttempt
	// checks that it still holds.
	LeaseUntil time.Time
}

// EndpointClaim asks ClaimEndpointDeliveries for up to Limit deliveries to
// Endpoint; a non-zero CreatedBefore takes only deliveries created before it.
type EndpointClaim struct {
	Endpoint      string
	Limit         int
	CreatedBefore time.Time
}

// DeliveryFilter selects deliveries for ListDeliveries.
type DeliveryFilter struct {
	Status    DeliveryStatus
	Event     string
	AccountID string
	Cursor    string
	Limit     int
}

// DeliveryPage is one page of deliveries, failed first, then newest first.
type DeliveryPage struct {
	Deliveries []Delivery
	NextCursor string
}

// Outbox is the webhook outbox: events written with account changes, fanned
// out to deliveries, claimed by dispatchers.
type Outbox interface {
	// AddEvents writes events that come with no account change (test events).
	AddEvents(ctx context.Context, events []Event) error
	// FanOut takes up to limit events not yet fanned out, oldest first, and
	// in one transaction creates a pending delivery for each endpoint that
	// endpoints returns for it and marks the event fanned out. It returns
	// the events it fanned out.
	FanOut(ctx context.Context, limit int, endpoints func(Event) []string) ([]Event, error)
	// ClaimDeliveries leases up to limit pending deliveries due at now, for
	// lease, so that no other dispatcher takes them meanwhile; a crashed
	// dispatcher's leases run out and the deliveries are claimed again.
	ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Delivery, error)
	// ClaimEndpointDeliveries leases, for each claim, up to its Limit of
	// the pending deliveries to its Endpoint due at now (created before
	// CreatedBefore, when set), soonest due first, in one transaction. Each
	// endpoint's deliveries are read on their own, so one endpoint's
	// backlog is never read while another's are claimed. The deliveries
	// come back in the order of the claims.
	ClaimEndpointDeliveries(ctx context.Context, now time.Time, lease time.Duration, claims []EndpointClaim) ([]Delivery, error)
	// PendingEndpoints returns the endpoints that have pending deliveries.
	PendingEndpoints(ctx context.Context) ([]string, error)
	// FinishAttempt records an attempt's outcome on a claimed delivery and
	// drops its lease: d.Status, d.Attempts, d.NextAttemptAt, d.LastStatus
	// and d.LastError are written — only while the lease d.LeaseUntil that
	// ClaimDeliveries gave is still the delivery's. A dispatcher that stalled
	// past its lease gets ErrConflict and writes nothing, so it cannot undo
	// what the dispatcher that claimed the delivery after it recorded.
	FinishAttempt(ctx context.Context, d *Delivery) error
	GetDelivery(ctx context.Context, id string) (*Delivery, error)
	ListDeliveries(ctx context.Context, f DeliveryFilter) (DeliveryPage, error)
	// Redeliver makes a delivery pending again, due now, keeping its id and
	// its event id.
	Redeliver(ctx context.Context, id string, now time.Time) error
	// DisableEndpoint records that an endpoint answered 410 Gone; a
	// disabled endpoint gets no new deliveries until EnableEndpoint.
	DisableEndpoint(ctx context.Context, endpoint, reason string, at time.Time) error
	EnableEndpoint(ctx context.Context, endpoint string) error
	DisabledEndpoints(ctx context.Context) (map[string]string, error)
	// PendingDeliveries counts deliveries not yet delivered nor failed.
	PendingDeliveries(ctx context.Context) (int, error)
	// Purge deletes, as of now, link tokens expired or used longer than
	// r.LinkTokens ago with their connect states, connect states expired
	// longer than r.ConnectStates ago, delivered and failed deliveries last
	// updated longer than r.Delivered and r.Failed ago, and events fanned
	// out, with no delivery left and written longer ago than the longer of
	// r.Delivered and r.Failed. It never deletes a pending delivery, an
	// event not yet fanned out or an event that still has a delivery. It
	// deletes in batches, each its own short transaction, until nothing is
	// left or ctx ends; on an error the counts say what was deleted before.
	Purge(ctx context.Context, now time.Time, r Retention) (PurgeCounts, error)
}
