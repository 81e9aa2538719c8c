package linkgate

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// gaugeTTL is how long one reading of the store's counts serves scrapes:
// several Prometheus servers scraping every few seconds cost one query
// round per gaugeTTL.
const gaugeTTL = 10 * time.Second

// storeGauges reads the store's counts when Prometheus scrapes: accounts by
// status, the webhook outbox's backlog and its oldest entry's age, and the
// deliveries retrying at each endpoint. One collector lives in Caddy's
// registry across reloads; each started config points it at its store.
type storeGauges struct {
	src atomic.Pointer[gaugeSource]

	mu     sync.Mutex
	read   time.Time
	stats  tokenstore.Stats
	source *gaugeSource

	accounts, pending, oldest, retrying *prometheus.Desc
}

// gaugeSource is where the gauges read: a store and the endpoint labels of
// the config that set it (the same endpoint index the counters use).
type gaugeSource struct {
	store     tokenstore.StatsReader
	endpoints map[string]string // URL → label
}

func newStoreGauges() *storeGauges {
	name := func(n string) string { return prometheus.BuildFQName("caddy", "linkgate", n) }
	return &storeGauges{
		accounts: prometheus.NewDesc(name("accounts"),
			"Integrated accounts by status; needs_reauth counts the accounts whose end users must reconnect.", []string{"status"}, nil),
		pending: prometheus.NewDesc(name("webhook_pending"),
			"Webhook deliveries (and events not yet fanned out) waiting to be sent or retried.", nil, nil),
		oldest: prometheus.NewDesc(name("webhook_oldest_pending_age_seconds"),
			"Age of the oldest webhook delivery or event still waiting; 0 when none waits.", nil, nil),
		retrying: prometheus.NewDesc(name("webhook_retrying"),
			"Webhook deliveries that failed at least once and wait for their next attempt, by endpoint index.", []string{"endpoint"}, nil),
	}
}

// setSource points the gauges at a started config's store.
func (g *storeGauges) setSource(s *gaugeSource) { g.src.Store(s) }

// clearSource forgets s when it is still the source (a stopping config
// must not clear the one a reload started meanwhile).
func (g *storeGauges) clearSource(s *gaugeSource) { g.src.CompareAndSwap(s, nil) }

// Describe implements prometheus.Collector.
func (g *storeGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.accounts
	ch <- g.pending
	ch <- g.oldest
	ch <- g.retrying
}

// Collect implements prometheus.Collector. A store that does not answer
// leaves the gauges out of the scrape rather than report zeros.
func (g *storeGauges) Collect(ch chan<- prometheus.Metric) {
	src := g.src.Load()
	if src == nil {
		return
	}
	g.mu.Lock()
	if g.source != src || time.Since(g.read) > gaugeTTL {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := src.store.Stats(ctx)
		cancel()
		if err != nil {
			g.mu.Unlock()
			return
		}
		g.stats, g.read, g.source = st, time.Now(), src
	}
	st := g.stats
	g.mu.Unlock()

	for _, s := range []account.Status{account.StatusActive, account.StatusConnecting, account.StatusNeedsReauth} {
		if _, ok := st.AccountsByStatus[string(s)]; !ok {
			ch <- prometheus.MustNewConstMetric(g.accounts, prometheus.GaugeValue, 0, string(s))
		}
	}
	for s, n := range st.AccountsByStatus {
		ch <- prometheus.MustNewConstMetric(g.accounts, prometheus.GaugeValue, float64(n), s)
	}
	ch <- prometheus.MustNewConstMetric(g.pending, prometheus.GaugeValue, float64(st.PendingDeliveries))
	age := 0.0
	if !st.OldestPending.IsZero() {
		age = max(0, time.Since(st.OldestPending).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(g.oldest, prometheus.GaugeValue, age)
	byLabel := map[string]int64{}
	for _, label := range src.endpoints {
		byLabel[label] = 0
	}
	for url, n := range st.RetryingByEndpoint {
		if label, ok := src.endpoints[url]; ok {
			byLabel[label] += n
		}
	}
	for label, n := range byLabel {
		ch <- prometheus.MustNewConstMetric(g.retrying, prometheus.GaugeValue, float64(n), label)
	}
}

// gaugeSource is the source of a runtime's gauges.
func (rt *runtime) gaugeSource() *gaugeSource {
	sr, ok := rt.store.Inner().(tokenstore.StatsReader)
	if !ok {
		return nil
	}
	eps := make(map[string]string, len(rt.app.Webhooks))
	for i, w := range rt.app.Webhooks {
		eps[w.URL] = strconv.Itoa(i)
	}
	return &gaugeSource{store: sr, endpoints: eps}
}
