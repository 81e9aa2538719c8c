package linkgate

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy path's counters, in Caddy's registry. No label
// names an account: the set of accounts is unbounded.
type metrics struct {
	injections *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		injections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "linkgate",
			Name:      "injections_total",
			Help:      "Proxied requests by outcome of credential injection.",
		}, []string{"outcome"}),
	}
	if reg == nil {
		return m, nil
	}
	if err := reg.Register(m.injections); err != nil {
		// A reload registers again into the same registry: reuse what is there.
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		m.injections = are.ExistingCollector.(*prometheus.CounterVec)
	}
	return m, nil
}
