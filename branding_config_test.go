package linkgate

import (
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/linkgate/linkgate/account"
)

func TestUnvalidatedKeyIntegrationsAreWarnedAbout(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	a := &App{logger: zap.New(core), Integrations: map[string]*account.Integration{
		"checked":   {Name: "checked", Auth: account.MethodAPIKey, ValidateURL: "https://api.example.com/me"},
		"unchecked": {Name: "unchecked", Auth: account.MethodAPIKey},
		"login":     {Name: "login", Auth: account.MethodBasic},
		"oauth":     {Name: "oauth", Auth: account.MethodOAuth2},
	}}
	a.warnUnvalidated()
	var warned []string
	for _, e := range logs.All() {
		if !strings.Contains(e.Message, "set validate_url") {
			t.Errorf("warning %q does not say what to set", e.Message)
		}
		warned = append(warned, e.ContextMap()["integration"].(string))
	}
	if strings.Join(warned, ",") != "login,unchecked" {
		t.Fatalf("warned about %v, want login and unchecked", warned)
	}
}
