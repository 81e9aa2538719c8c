package linkgate

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// Listing bounds.
const (
	// defaultListLimit is the page size when the caller gives none.
	defaultListLimit = 100
	// maxListLimit is the largest page: a larger limit is clamped to it,
	// since Truto documents no upper bound and its clients send what they
	// like.
	maxListLimit = 1000
	// maxScanRounds bounds how many store pages one listing with a time
	// filter reads; past it the answer is a short page with a next_cursor,
	// which a client pages on from.
	maxScanRounds = 20
)

// accountQuery is a listing of integrated accounts as Truto's clients ask
// for it: the query string of GET /integrated-account, or the query object
// of POST /integrated-account/bulk-delete.
type accountQuery struct {
	filter tokenstore.Filter
	limit  int
	// none is set when a filter can match no account of this gateway
	// (is_sandbox=true, another environment's id).
	none             bool
	created, updated timeRange
}

// timeRange is a created_at or updated_at condition; zero bounds are open.
type timeRange struct {
	eq, gt, gte, lt, lte time.Time
}

func (t timeRange) set() bool {
	return !t.eq.IsZero() || !t.gt.IsZero() || !t.gte.IsZero() || !t.lt.IsZero() || !t.lte.IsZero()
}

// matches compares at millisecond precision, the precision times are shown
// with, so that a time copied from an answer finds its account.
func (t timeRange) matches(v time.Time) bool {
	v = v.UTC().Truncate(time.Millisecond)
	switch {
	case !t.eq.IsZero() && !v.Equal(t.eq),
		!t.gt.IsZero() && !v.After(t.gt),
		!t.gte.IsZero() && v.Before(t.gte),
		!t.lt.IsZero() && !v.Before(t.lt),
		!t.lte.IsZero() && v.After(t.lte):
		return false
	}
	return true
}

// queryKey is a filter key with an optional [operator]: status,
// created_at[gt], integration[name].
var queryKey = regexp.MustCompile(`^([a-z_.]+)(?:\[([a-z_]+)\])?$`)

// supportedFilters are the filters of Truto's list endpoint that linkgate
// supports, for the message that refuses the others.
var supportedFilters = []string{"tenant_id", "status", "integration.name", "environment_integration_id",
	"environment_id", "is_sandbox", "created_at", "updated_at"}

// parseAccountQuery reads a listing's filters. An unknown filter or an
// operator linkgate does not support is refused (400): answering as if it
// were not there would widen the result without the caller knowing. A
// tenant-restricted caller sees its tenant only.
func parseAccountQuery(v url.Values, env *wire.Environment, c caller) (*accountQuery, error) {
	q := &accountQuery{limit: defaultListLimit}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vals := v[k]
		if len(vals) != 1 {
			return nil, wire.Errorf(http.StatusBadRequest, "%s is given %d times: give it once", k, len(vals))
		}
		val := vals[0]
		m := queryKey.FindStringSubmatch(k)
		if m == nil {
			return nil, unsupportedFilter(k)
		}
		name, op := m[1], m[2]
		if name == "integration" && op == "name" {
			// Truto's SDK sends {integration: {name}} as integration[name].
			name, op = "integration.name", ""
		}
		if op != "" && name != "created_at" && name != "updated_at" {
			return nil, wire.Errorf(http.StatusBadRequest, "the operator %q of %s is not supported: filter %s by equality", op, name, name)
		}
		switch name {
		case "limit":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				return nil, wire.Errorf(http.StatusBadRequest, "limit must be a positive number (larger than %d is read as %d)", maxListLimit, maxListLimit)
			}
			q.limit = min(n, maxListLimit)
		case "next_cursor":
			q.filter.Cursor = val
		case "tenant_id":
			q.filter.TenantID = val
		case "status":
			s := account.Status(val)
			if !s.Valid() {
				return nil, wire.Errorf(http.StatusBadRequest, "status must be one of active, connecting, post_install_error, validation_error, needs_reauth")
			}
			q.filter.Status = s
		case "integration.name", "integration":
			if err := q.integration(val); err != nil {
				return nil, err
			}
		case "environment_integration_id":
			n, ok := env.IntegrationByEnvironmentID(val)
			if !ok {
				q.none = true
				continue
			}
			if err := q.integration(n); err != nil {
				return nil, err
			}
		case "environment_id":
			if val != env.ID {
				q.none = true
			}
		case "is_sandbox":
			switch val {
			case "true":
				q.none = true
			case "false":
			default:
				return nil, wire.Errorf(http.StatusBadRequest, "is_sandbox must be true or false")
			}
		case "created_at", "updated_at":
			r := &q.created
			if name == "updated_at" {
				r = &q.updated
			}
			if err := r.set1(name, op, val); err != nil {
				return nil, err
			}
		default:
			return nil, unsupportedFilter(k)
		}
	}
	if c.tenant != "" {
		if q.filter.TenantID != "" && q.filter.TenantID != c.tenant {
			q.none = true
		}
		q.filter.TenantID = c.tenant
	}
	return q, nil
}

func (q *accountQuery) integration(name string) error {
	if q.filter.Integration != "" && q.filter.Integration != name {
		return wire.Errorf(http.StatusBadRequest, "the integration is given twice, as %q and %q", q.filter.Integration, name)
	}
	q.filter.Integration = name
	return nil
}

func unsupportedFilter(k string) error {
	return wire.Errorf(http.StatusBadRequest, "the filter %q is not supported; the filters are %s, with limit and next_cursor", k, strings.Join(supportedFilters, ", "))
}

// set1 sets one bound of a time range from name[op]=value.
func (t *timeRange) set1(name, op, val string) error {
	at, err := time.Parse(time.RFC3339Nano, val)
	if err != nil {
		return wire.Errorf(http.StatusBadRequest, "%s must be an RFC 3339 time such as 2021-08-10T10:00:00.000Z", name)
	}
	at = at.UTC()
	switch op {
	case "":
		t.eq = at.Truncate(time.Millisecond)
	case "gt":
		t.gt = at
	case "gte":
		t.gte = at
	case "lt":
		t.lt = at
	case "lte":
		t.lte = at
	default:
		return wire.Errorf(http.StatusBadRequest, "the operator %q of %s is not supported: use gt, gte, lt or lte", op, name)
	}
	return nil
}

// bounds is the span of creation times the range can match, as a lower
// bound (inclusive) and an upper one (exclusive), zero when open: what
// matches compares at millisecond precision, so the span runs to whole
// milliseconds. The store seeks to it; matches still decides.
func (t timeRange) bounds() (from, before time.Time) {
	ceil := func(v time.Time) time.Time {
		if f := v.Truncate(time.Millisecond); f.Before(v) {
			return f.Add(time.Millisecond)
		}
		return v
	}
	later := func(a, b time.Time) time.Time {
		if a.IsZero() || b.After(a) {
			return b
		}
		return a
	}
	earlier := func(a, b time.Time) time.Time {
		if a.IsZero() || b.Before(a) {
			return b
		}
		return a
	}
	if !t.eq.IsZero() {
		from, before = t.eq, t.eq.Add(time.Millisecond)
	}
	if !t.gt.IsZero() {
		from = later(from, t.gt.Truncate(time.Millisecond).Add(time.Millisecond))
	}
	if !t.gte.IsZero() {
		from = later(from, ceil(t.gte))
	}
	if !t.lt.IsZero() {
		before = earlier(before, ceil(t.lt))
	}
	if !t.lte.IsZero() {
		before = earlier(before, t.lte.Truncate(time.Millisecond).Add(time.Millisecond))
	}
	return from, before
}

func (q *accountQuery) matches(a *account.Account) bool {
	return q.created.matches(a.CreatedAt) && q.updated.matches(a.UpdatedAt)
}

// page reads one page of the listing. Filters the store has are applied by
// the store (created_at as the bounds of its seek); a time condition is
// applied here too, on store pages exactly as
// large as what is still missing, so that every account a store page held
// was either kept or passed over and the store's cursor continues right
// after it.
func (q *accountQuery) page(ctx context.Context, st tokenstore.Store) (tokenstore.Page, error) {
	if q.none {
		return tokenstore.Page{Accounts: []*account.Account{}}, nil
	}
	f := q.filter
	f.CreatedFrom, f.CreatedBefore = q.created.bounds()
	if !q.created.set() && !q.updated.set() {
		f.Limit = q.limit
		return st.ListAccounts(ctx, f)
	}
	var out tokenstore.Page
	for range maxScanRounds {
		f.Limit = q.limit - len(out.Accounts)
		p, err := st.ListAccounts(ctx, f)
		if err != nil {
			return tokenstore.Page{}, err
		}
		for _, a := range p.Accounts {
			if q.matches(a) {
				out.Accounts = append(out.Accounts, a)
			}
		}
		out.NextCursor = p.NextCursor
		if p.NextCursor == "" || len(out.Accounts) >= q.limit {
			break
		}
		f.Cursor = p.NextCursor
	}
	return out, nil
}

// queryValues turns a bulk-delete query object ({"tenant_id": "acme-1",
// "created_at": {"lt": "…"}}) into the query string form of the listing.
func queryValues(obj map[string]any) (url.Values, error) {
	v := url.Values{}
	for k, raw := range obj {
		switch val := raw.(type) {
		case string:
			v.Set(k, val)
		case bool:
			v.Set(k, strconv.FormatBool(val))
		case map[string]any:
			for op, inner := range val {
				s, ok := inner.(string)
				if !ok {
					return nil, wire.Errorf(http.StatusBadRequest, "query.%s.%s must be a string", k, op)
				}
				v.Set(k+"["+op+"]", s)
			}
		default:
			if slices.Contains([]string{"or", "and"}, k) {
				return nil, wire.Errorf(http.StatusBadRequest, "query.%s is not supported: give the filters of one listing", k)
			}
			return nil, wire.Errorf(http.StatusBadRequest, "query.%s must be a string, a boolean or an object of operators", k)
		}
	}
	for _, k := range []string{"limit", "next_cursor"} {
		if v.Has(k) {
			return nil, wire.Errorf(http.StatusBadRequest, "query.%s is not a filter", k)
		}
	}
	return v, nil
}
