package linkflow

import (
	"strings"

	"golang.org/x/oauth2"

	"github.com/linkgate/linkgate/account"
)

// AuthorizeURL is the provider's authorization URL an end user is sent to:
// the integration's authorize_url with the account's connection fields
// filled in (its host checked against allowed_hosts), client_id,
// redirect_uri, state, the scopes joined by the integration's separator,
// its authorize_params, and a PKCE S256 challenge of verifier unless the
// integration turns PKCE off. The connect page and the preset catalogue's
// tests build it here, so both see the same request.
func AuthorizeURL(in *account.Integration, conn map[string]string, redirectURI string, scopes []string, state, verifier string) (string, error) {
	authURL, err := in.ResolveURL("authorize_url", in.AuthorizeURL, conn)
	if err != nil {
		return "", err
	}
	cfg := &oauth2.Config{
		ClientID:    in.ClientID,
		Endpoint:    oauth2.Endpoint{AuthURL: authURL},
		RedirectURL: redirectURI,
	}
	opts := make([]oauth2.AuthCodeOption, 0, len(in.AuthorizeParams)+2)
	// x/oauth2 joins scopes with a space; some providers want commas.
	if len(scopes) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("scope", strings.Join(scopes, in.Separator())))
	}
	for k, v := range in.AuthorizeParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	if in.UsesPKCE() {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	return cfg.AuthCodeURL(state, opts...), nil
}
