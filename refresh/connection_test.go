package refresh

import (
	"context"
	"net/url"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/linkgate/linkgate/account"
)

// A refresh answer's token_response fields (Salesforce's instance_url) are
// read again: a value within allowed_hosts is stored with the new tokens;
// one outside, or not an origin, is dropped with a warning and the account
// keeps its value and stays active; an answer without the field keeps it
// too.
func TestRefreshRereadsTokenResponseFields(t *testing.T) {
	onEachStore(t, func(t *testing.T, kind string) {
		e := newEnvOn(t, kind, nil)
		as, _ := url.Parse(e.auth.URL())
		e.integ.BaseURL = "{connection.instance_url}/services/data"
		e.integ.AllowedHosts = []string{"*.inst.test", as.Host}
		e.integ.ConnectionFields = []account.ConnectionField{{Name: "instance_url", Kind: account.KindHTTPSURL, Source: account.SourceTokenResponse, Path: "instance_url"}}
		if err := e.integ.Validate(); err != nil {
			t.Fatal(err)
		}
		a := e.connect("acc-inst", e.clock.Now().Add(time.Hour)).Clone()
		a.Context = map[string]any{"instance_url": "https://na1.inst.test", "region": "emea"}
		if err := e.store.UpdateAccount(context.Background(), a, nil); err != nil {
			t.Fatal(err)
		}
		instance := func() any { return e.get("acc-inst").Context["instance_url"] }

		e.auth.SetTokenExtra(map[string]any{"instance_url": "https://NA2.inst.test/"})
		if err := e.r.Refresh(context.Background(), "acc-inst"); err != nil {
			t.Fatal(err)
		}
		if got := instance(); got != "https://na2.inst.test" {
			t.Fatalf("instance_url after a refresh that moved it: %v", got)
		}
		if got := e.get("acc-inst").Context["region"]; got != "emea" {
			t.Fatalf("the rest of the context was lost: region = %v", got)
		}

		for _, bad := range []any{"https://evil.example.com", "https://na1.inst.test.evil.example.com", "http://na3.inst.test", "https://u:p@na3.inst.test", "javascript:alert(1)", 42} {
			before := e.get("acc-inst").Credentials.AccessToken
			e.auth.SetTokenExtra(map[string]any{"instance_url": bad})
			if err := e.r.Refresh(context.Background(), "acc-inst"); err != nil {
				t.Fatalf("refresh answering %v: %v", bad, err)
			}
			got := e.get("acc-inst")
			if got.Context["instance_url"] != "https://na2.inst.test" || got.Status != account.StatusActive || got.Credentials.AccessToken == before {
				t.Fatalf("refresh answering %v: instance %v, status %s, new token stored %v", bad, got.Context["instance_url"], got.Status, got.Credentials.AccessToken != before)
			}
		}
		if !e.logged(zapcore.WarnLevel, "the refresh answer carries a connection field that is refused") {
			t.Error("a refused instance_url was not logged")
		}

		e.auth.SetTokenExtra(nil)
		if err := e.r.Refresh(context.Background(), "acc-inst"); err != nil {
			t.Fatal(err)
		}
		if got := instance(); got != "https://na2.inst.test" {
			t.Fatalf("instance_url after an answer without it: %v", got)
		}
	})
}
