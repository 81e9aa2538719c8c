package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// ErrNoEndpoint is SendTest's error for an id that names no endpoint.
var ErrNoEndpoint = errors.New("no webhook endpoint with that id")

// SendTest sends a test event now, once, to the endpoint whose webhook id is
// id (every endpoint when id is empty), whatever its event filter, and
// returns what each answered. It is not retried nor kept in the delivery
// log: the answer is the result. Each send is bounded by the dispatcher's
// timeout and by ctx.
func (d *Dispatcher) SendTest(ctx context.Context, id string) (wire.WebhookTestResult, error) {
	var eps []Endpoint
	for _, ep := range d.endpoints {
		if id == "" || ep.WebhookID() == id {
			eps = append(eps, ep)
		}
	}
	if id != "" && len(eps) == 0 {
		return wire.WebhookTestResult{}, ErrNoEndpoint
	}
	now := d.opts.Now().UTC()
	payload := []byte(`{"message":"a test event from linkgate","sent_at":"` + formatTime(now) + `"}`)
	ev := tokenstore.Event{ID: newEventID(), Name: account.EventTest, Payload: payload, CreatedAt: now}
	out := wire.WebhookTestResult{Success: len(eps) > 0, EventID: ev.ID, Results: []wire.WebhookTestTarget{}}
	for _, ep := range eps {
		r := wire.WebhookTestTarget{ID: ep.WebhookID(), TargetURL: redactURL(ep.URL)}
		status, err := d.sendTest(ctx, ep, ev)
		r.Status = status
		switch {
		case err != nil:
			r.Error = err.Error()
		case status < 200 || status > 299:
			r.Error = fmt.Sprintf("answered %d %s", status, http.StatusText(status))
		default:
			r.Success = true
		}
		out.Success = out.Success && r.Success
		out.Results = append(out.Results, r)
	}
	return out, nil
}

// sendTest posts the test event to one endpoint, signed as every delivery.
func (d *Dispatcher) sendTest(ctx context.Context, ep Endpoint, ev tokenstore.Event) (int, error) {
	s, err := newSigner(ep.Secrets, ep.SignatureEncoding)
	if err != nil {
		return 0, errors.New("the endpoint's secret is not usable")
	}
	body, err := d.envelope(ev, ep.WebhookID()).Marshal()
	if err != nil {
		return 0, errors.New("encoding the envelope failed")
	}
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("building the request failed")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.opts.UserAgent)
	s.sign(req.Header, ev.ID, d.opts.Now(), body)
	resp, err := d.opts.Client.Do(req)
	if err != nil {
		return 0, describeSendError(err, d.opts.Timeout)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// eventTypes expands an endpoint's event filter into the event names it
// receives.
func eventTypes(ep Endpoint) []string {
	out := []string{}
	for _, name := range account.Events {
		if ep.Matches(name) {
			out = append(out, name)
		}
	}
	return out
}
