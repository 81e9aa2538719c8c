package linkgate

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkgate/linkgate/internal/prom"
)

// metrics are the proxy path's counters, in Caddy's registry. No label
// names an account: the set of accounts is unbounded.
type metrics struct {
	injections *prometheus.CounterVec
	// byOutcome holds each outcome's counter, resolved once: the proxy path
	// then counts without a label lookup.
	byOutcome [outcomeCount]prometheus.Counter
}

// outcome is what happened to one proxied request.
type outcome int

const (
	outcomeOk outcome = iota
	outcomeUnauthorized
	outcomeNoIntegration
	outcomeCredentialsError
	outcomeRetried
	outcomeUpstream401
	// outcomeNoTransport: the route answered without the linkgate
	// transport, so no credentials went out.
	outcomeNoTransport
	outcomeCount
)

var outcomeLabels = [outcomeCount]string{"ok", "unauthorized", "no_integration", "credentials_error", "retried", "upstream_401", "no_transport"}

func (m *metrics) count(o outcome) { m.byOutcome[o].Inc() }

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		injections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "linkgate",
			Name:      "injections_total",
			Help:      "Proxied requests by outcome of credential injection.",
		}, []string{"outcome"}),
	}
	m.injections = prom.Register(reg, m.injections)
	for o, label := range outcomeLabels {
		m.byOutcome[o] = m.injections.WithLabelValues(label)
	}
	return m, nil
}
