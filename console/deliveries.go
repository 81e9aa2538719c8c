package console

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/linkgate/linkgate/tokenstore"
)

// deliveryRow is one webhook delivery as the console shows it.
type deliveryRow struct {
	ID         string
	Event      string
	EventID    string
	AccountID  string
	Endpoint   string
	Status     string
	Attempts   int
	LastStatus int
	LastError  string
	NextAt     time.Time
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

func deliveryRows(ds []tokenstore.Delivery) []deliveryRow {
	out := make([]deliveryRow, 0, len(ds))
	for _, d := range ds {
		row := deliveryRow{
			ID:         d.ID,
			Event:      d.Event.Name,
			EventID:    d.Event.ID,
			AccountID:  d.Event.AccountID,
			Endpoint:   endpointLabel(d.Endpoint),
			Status:     string(d.Status),
			Attempts:   d.Attempts,
			LastStatus: d.LastStatus,
			LastError:  d.LastError,
			CreatedAt:  d.CreatedAt,
			UpdatedAt:  d.UpdatedAt,
		}
		if d.Status == tokenstore.DeliveryPending {
			row.NextAt = d.NextAttemptAt
		}
		out = append(out, row)
	}
	return out
}

// deliveriesData is the webhook deliveries page.
type deliveriesData struct {
	Status     string
	Statuses   []tokenstore.DeliveryStatus
	Deliveries []deliveryRow
	Next       string
	First      string
	Problem    string
}

func (c *Console) deliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := deliveriesData{
		Status:   q.Get("status"),
		Statuses: []tokenstore.DeliveryStatus{tokenstore.DeliveryFailed, tokenstore.DeliveryRetrying, tokenstore.DeliveryPending, tokenstore.DeliveryDelivered},
	}
	switch tokenstore.DeliveryStatus(d.Status) {
	case "", tokenstore.DeliveryFailed, tokenstore.DeliveryRetrying, tokenstore.DeliveryPending, tokenstore.DeliveryDelivered:
	default:
		d.Problem = "Unknown delivery status: choose one from the list."
		c.render(w, r, http.StatusBadRequest, "deliveries", "Webhook deliveries", "deliveries", d)
		return
	}
	cursor := q.Get("cursor")
	page, err := c.opts.Store.ListDeliveries(r.Context(), tokenstore.DeliveryFilter{
		Status: tokenstore.DeliveryStatus(d.Status),
		Cursor: cursor,
		Limit:  pageSize,
	})
	if errors.Is(err, tokenstore.ErrInvalidCursor) {
		d.Problem = "That page link is not valid any more. Start from the first page."
		d.First = c.deliveriesURL(d.Status, "")
		c.render(w, r, http.StatusBadRequest, "deliveries", "Webhook deliveries", "deliveries", d)
		return
	}
	if err != nil {
		c.storeFailed(w, r, "listing deliveries", err)
		return
	}
	d.Deliveries = deliveryRows(page.Deliveries)
	if page.NextCursor != "" {
		d.Next = c.deliveriesURL(d.Status, page.NextCursor)
	}
	if cursor != "" {
		d.First = c.deliveriesURL(d.Status, "")
	}
	c.render(w, r, http.StatusOK, "deliveries", "Webhook deliveries", "deliveries", d)
}

func (c *Console) deliveriesURL(status, cursor string) string {
	v := url.Values{}
	if status != "" {
		v.Set("status", status)
	}
	if cursor != "" {
		v.Set("cursor", cursor)
	}
	if len(v) == 0 {
		return c.path("/deliveries")
	}
	return c.path("/deliveries?" + v.Encode())
}

// redeliver makes a delivery pending again and goes back to the page the
// form was on: the account's page when the form names an account, else the
// delivery log. Only an account id is taken from the form, never a URL, so
// the redirect cannot leave the console.
func (c *Console) redeliver(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	back := c.path("/deliveries")
	if acc := r.PostForm.Get("account"); acc != "" {
		back = c.path("/accounts/" + url.PathEscape(acc))
	}
	err := c.opts.Redeliver(r.Context(), id)
	switch {
	case err == nil:
		c.sessions.setFlash(sessionOf(r), "Delivery "+id+" will be sent again now.")
	case errors.Is(err, tokenstore.ErrNotFound):
		c.renderError(w, r, http.StatusNotFound, "There is no webhook delivery with that id.")
		return
	default:
		c.storeFailed(w, r, "redelivering", err)
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}
