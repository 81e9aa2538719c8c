package refresh

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestSweeperRefreshesExpiringTokensAndStopsCleanly(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.SweepInterval = 50 * time.Millisecond
		o.SweepBatch = 3
		o.SweepConcurrency = 2
		o.SweepJitter = 10 * time.Millisecond
	})
	var soon, later []string
	for i := range 7 {
		id := fmt.Sprintf("acc-soon-%d", i)
		e.connect(id, e.clock.Now().Add(5*time.Minute))
		soon = append(soon, id)
	}
	for i := range 2 {
		id := fmt.Sprintf("acc-later-%d", i)
		e.connect(id, e.clock.Now().Add(time.Hour))
		later = append(later, id)
	}
	before := map[string]string{}
	for _, id := range append(soon, later...) {
		before[id] = e.get(id).Credentials.AccessToken
	}
	ignore := goleak.IgnoreCurrent()
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	if err := e.r.Start(); err == nil {
		t.Fatal("a second Start succeeded")
	}
	eventually(t, "the sweeper refreshes every expiring token", func() bool {
		for _, id := range soon {
			if e.get(id).Credentials.AccessToken == before[id] {
				return false
			}
		}
		return true
	})
	if err := e.r.Stop(); err != nil {
		t.Fatal(err)
	}
	e.http.CloseIdleConnections()
	goleak.VerifyNone(t, ignore)
	for _, id := range later {
		if e.get(id).Credentials.AccessToken != before[id] {
			t.Fatalf("%s was refreshed although far from expiry", id)
		}
	}
	if n := e.refreshCalls(); n != len(soon) {
		t.Fatalf("%d token calls for %d expiring accounts", n, len(soon))
	}
}

func TestMetricsCountOutcomesAndSurviveAReload(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(o *Options) { o.Registerer = reg })
	a := e.connect("acc-metrics", e.clock.Now().Add(-time.Second))
	if _, err := e.r.Credentials(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	// A reload builds a new refresher on the same registry.
	again := e.newRefresherOn(e.store, func(o *Options) { o.Registerer = reg })
	if err := again.Refresh(context.Background(), a.ID); err != nil {
		t.Fatal(err)
	}
	var m dto.Metric
	if err := e.r.metrics.refreshes.WithLabelValues("success").Write(&m); err != nil || m.GetCounter().GetValue() != 2 {
		t.Fatalf("success count %v (%v), want 2 across the reload", m.GetCounter().GetValue(), err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range families {
		if f.GetName() == "caddy_linkgate_token_call_duration_seconds" {
			found = len(f.GetMetric()) == 1 && f.GetMetric()[0].GetHistogram().GetSampleCount() == 2
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "outcome" {
					t.Errorf("metric %s has label %s: only bounded labels are allowed", f.GetName(), l.GetName())
				}
			}
		}
	}
	if !found {
		t.Fatal("the token call duration histogram is not registered with two calls")
	}
}
