package webhook

import (
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/tokenstore"
)

// TestDeliveredAlarmIsLogged: an authentication_error delivered to an
// endpoint is logged at info under integrated_account_id, so that "did the
// alarm for this account go out" is answered from the log.
func TestDeliveredAlarmIsLogged(t *testing.T) {
	st := openStore(t)
	rc := testenv.NewWebhookReceiver(t)
	core, logs := observedLogger()
	opts := fastOptions(t)
	opts.Logger = core
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(t)}}}, opts)
	startDispatcher(t, d)
	failAccount(t, st, "acc_alarm_log")
	d.Notify()
	waitFor(t, "the alarm delivered", 10*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryDelivered})) == 1
	})
	waitFor(t, "the alarm's log entry", 10*time.Second, func() bool {
		for _, e := range logs.FilterMessage("authentication_error alarm delivered").All() {
			if e.ContextMap()["integrated_account_id"] == "acc_alarm_log" {
				return true
			}
		}
		return false
	})
}
