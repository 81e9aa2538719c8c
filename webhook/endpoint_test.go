package webhook

import (
	"strings"
	"testing"
)

func TestEndpointValidate(t *testing.T) {
	sec := newSecret(t)
	ok := Endpoint{URL: "https://app.example.com/hooks", Secrets: []string{sec}, Events: []string{"integrated_account:*"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid endpoint: %v", err)
	}
	bad := map[string]Endpoint{
		"relative url":   {URL: "/hooks", Secrets: []string{sec}},
		"ftp url":        {URL: "ftp://example.com/x", Secrets: []string{sec}},
		"no secret":      {URL: "https://example.com/x"},
		"bad secret":     {URL: "https://example.com/x", Secrets: []string{sec, "hunter2-not-a-whsec"}},
		"encoding":       {URL: "https://example.com/x", Secrets: []string{sec}, SignatureEncoding: "base32"},
		"unknown event":  {URL: "https://example.com/x", Secrets: []string{sec}, Events: []string{"integrated_acount:*"}},
		"malformed glob": {URL: "https://example.com/x", Secrets: []string{sec}, Events: []string{"integrated_account:["}},
	}
	for name, ep := range bad {
		t.Run(name, func(t *testing.T) {
			err := ep.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), strings.TrimPrefix(sec, SecretPrefix)) {
				t.Fatalf("error quotes a secret: %v", err)
			}
		})
	}
	withToken := Endpoint{URL: "https://user:pw@example.com/x?token=abc123", Secrets: []string{"nope"}}
	if err := withToken.Validate(); err == nil || strings.Contains(err.Error(), "abc123") || strings.Contains(err.Error(), "pw@") {
		t.Fatalf("error shows the URL's credentials: %v", err)
	}
}

func TestEndpointMatches(t *testing.T) {
	all := Endpoint{}
	auth := Endpoint{Events: []string{"integrated_account:authentication_error", "test"}}
	glob := Endpoint{Events: []string{"integrated_account:*"}}
	for _, c := range []struct {
		ep    Endpoint
		event string
		want  bool
	}{
		{all, "test", true},
		{all, "integrated_account:created", true},
		{auth, "integrated_account:authentication_error", true},
		{auth, "integrated_account:active", false},
		{auth, "test", true},
		{glob, "integrated_account:deleted", true},
		{glob, "test", false},
	} {
		if got := c.ep.Matches(c.event); got != c.want {
			t.Errorf("%v.Matches(%q) = %v", c.ep.Events, c.event, got)
		}
	}
	a, b := Endpoint{URL: "https://a.example/x"}, Endpoint{URL: "https://b.example/x"}
	if a.WebhookID() == b.WebhookID() || a.WebhookID() != (Endpoint{URL: "https://a.example/x"}).WebhookID() {
		t.Fatal("derived webhook ids must be distinct per URL and stable")
	}
	if (Endpoint{ID: "wh_main", URL: "https://a.example/x"}).WebhookID() != "wh_main" {
		t.Fatal("configured id ignored")
	}
}
