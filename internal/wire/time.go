package wire

import (
	"encoding/json"
	"time"
)

// TimeFormat is how every time is written on the wire: RFC 3339 in UTC with
// exactly three fraction digits, as Truto writes them
// ("2021-08-10T10:00:00.000Z").
const TimeFormat = "2006-01-02T15:04:05.000Z"

// FormatTime writes t in TimeFormat.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Time is a time written in TimeFormat; the zero time is written as null.
type Time time.Time

// MarshalJSON writes the time in TimeFormat, or null when it is zero.
func (t Time) MarshalJSON() ([]byte, error) {
	if time.Time(t).IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(FormatTime(time.Time(t)))
}

// UnmarshalJSON reads any RFC 3339 time, or null.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = Time{}
		return nil
	}
	var v time.Time
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*t = Time(v)
	return nil
}
