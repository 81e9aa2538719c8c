package refresh

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
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
		m.refreshes = register(reg, m.refreshes)
		m.duration = register(reg, m.duration)
	}
	return m
}

// register registers c, or returns the collector already registered under
// its name: a config reload builds a new Refresher on the same registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// outcome counts one token call; class 0 is a success.
func (m *metrics) outcome(c Class) {
	name := "success"
	if c != 0 {
		name = c.String()
	}
	m.refreshes.WithLabelValues(name).Inc()
}
