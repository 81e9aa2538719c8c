package refresh

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkgate/linkgate/internal/prom"
)

// metrics are the refresher's Prometheus collectors. Labels are bounded:
// never an account id.
type metrics struct {
	refreshes *prometheus.CounterVec
	duration  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "linkgate",
			Name:      "token_refreshes_total",
			Help:      "Token-endpoint calls by outcome: success, transient, revoked or misconfigured.",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "caddy",
			Subsystem: "linkgate",
			Name:      "token_call_duration_seconds",
			Help:      "Duration of token-endpoint calls.",
			Buckets:   prometheus.DefBuckets,
		}),
	}
	if reg != nil {
		m.refreshes = prom.Register(reg, m.refreshes)
		m.duration = prom.Register(reg, m.duration)
	}
	return m
}

// outcome counts one token call; class 0 is a success.
func (m *metrics) outcome(c Class) {
	name := "success"
	if c != 0 {
		name = c.String()
	}
	m.refreshes.WithLabelValues(name).Inc()
}
