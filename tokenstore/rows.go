package tokenstore

// rowSource is what database/sql's rows and pgx's rows have in common, so
// that a query's rows are read by one loop on both stores.
type rowSource interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// collect reads every row of rows with scan; a failure is a store error
// about what. The caller closes rows.
func collect[T any](rows rowSource, what string, scan func(rowScanner) (T, error)) ([]T, error) {
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, storeErr(what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr(what, err)
	}
	return out, nil
}

// claimedDeliveries reads claimed deliveries, each with the lease it was
// claimed until.
func claimedDeliveries(rows rowSource, until int64) ([]Delivery, error) {
	out, err := collect(rows, "claiming deliveries", scanDelivery)
	for i := range out {
		out[i].LeaseUntil = fromNanos(until)
	}
	return out, err
}
