package tokenstore

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrInvalidCursor is returned by listings given a cursor they did not make;
// an API answers it with 400.
var ErrInvalidCursor = errors.New("invalid cursor")

// The largest and default page sizes of listings.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

func pageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return n
}

// cursor is a keyset position: the sort key of the last row of a page. It
// travels as opaque base64 so that callers do not build their own.
type cursor struct {
	rank int64 // deliveries: 1 for failed, 0 otherwise
	at   int64 // created_at, Unix nanoseconds
	id   string
}

func (c cursor) encode() string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d.%d.%s", c.rank, c.at, c.id))
}

func decodeCursor(s string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, ErrInvalidCursor
	}
	parts := strings.SplitN(string(b), ".", 3)
	// The id goes to the database as text: it must be text a database takes.
	if len(parts) != 3 || parts[2] == "" || !utf8.ValidString(parts[2]) || strings.IndexByte(parts[2], 0) >= 0 {
		return cursor{}, ErrInvalidCursor
	}
	rank, err1 := strconv.ParseInt(parts[0], 10, 64)
	at, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return cursor{}, ErrInvalidCursor
	}
	return cursor{rank: rank, at: at, id: parts[2]}, nil
}

// createdBounds are a listing's created_at bounds in Unix nanoseconds: the
// lower bound from (inclusive, hasFrom when set), and the upper bound as a
// keyset position (at, id) that rows must sort before: the page's cursor
// or (CreatedBefore, ""), whichever comes first in page order, so that one
// row comparison bounds the seek. hasUpper is false when neither is set.
func createdBounds(f Filter) (from int64, hasFrom bool, upper cursor, hasUpper bool, err error) {
	if f.Cursor != "" {
		if upper, err = decodeCursor(f.Cursor); err != nil {
			return 0, false, cursor{}, false, err
		}
		hasUpper = true
	}
	if b, ok := nanosInRange(f.CreatedBefore); ok && (!hasUpper || b <= upper.at) {
		// (b, "") sorts before every row created at b: no id is below "".
		upper, hasUpper = cursor{at: b}, true
	}
	from, hasFrom = nanosInRange(f.CreatedFrom)
	return from, hasFrom, upper, hasUpper, nil
}

// nanosInRange is t in Unix nanoseconds when t is set and representable.
func nanosInRange(t time.Time) (int64, bool) {
	if t.IsZero() || t.Year() < 1678 || t.Year() > 2261 {
		return 0, false
	}
	return t.UnixNano(), true
}

// nanos stores a time as Unix nanoseconds, the zero time as 0.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos; times come back in UTC.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// prefixEnd is the smallest string greater than every string that starts with
// p, so that a prefix search is an index range (0xff never occurs in UTF-8).
func prefixEnd(p string) string { return p + "\xff" }
