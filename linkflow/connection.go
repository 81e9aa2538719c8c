package linkflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// formFieldPrefix prefixes a connection field's name in the connect form.
const formFieldPrefix = "connection."

// knownConnection are the connection fields of in known before the end
// user fills the form: those of the account being reconnected, with the
// link token's context over them. Values that fail their check are left
// out, so the form asks for them again.
func (s *Service) knownConnection(ctx context.Context, lt *tokenstore.LinkToken, in *account.Integration) map[string]string {
	if len(in.ConnectionFields) == 0 {
		return nil
	}
	out := map[string]string{}
	if lt.AccountID != "" {
		if a, err := s.store.GetAccount(ctx, lt.AccountID); err == nil && a.Integration == in.Name {
			for k, v := range in.Connection(a.Context) {
				out[k] = v
			}
		}
	}
	for k, v := range in.Connection(lt.Context) {
		out[k] = v
	}
	for k, v := range out {
		nv, err := in.Normalize(in.Field(k), v)
		if err != nil {
			delete(out, k)
			continue
		}
		out[k] = nv
	}
	return out
}

// fieldInputs are the connect form's inputs for in's user fields.
func fieldInputs(in *account.Integration, known map[string]string, form url.Values) []fieldInput {
	var out []fieldInput
	for _, f := range in.UserFields() {
		v := known[f.Name]
		if form != nil {
			if fv, ok := form[formFieldPrefix+f.Name]; ok && len(fv) > 0 {
				v = fv[0]
			}
		}
		out = append(out, fieldInput{Name: f.Name, Label: f.Title(), Help: f.Help, Value: v, Optional: f.Optional})
	}
	return out
}

// userConnection are the user fields of in for a connection started from
// the connect form: what the form gives, else what is known already. Each
// value is checked against its kind; the error says which field is wrong.
func (s *Service) userConnection(ctx context.Context, lt *tokenstore.LinkToken, in *account.Integration, form url.Values) (map[string]string, error) {
	known := s.knownConnection(ctx, lt, in)
	out := map[string]string{}
	for k, v := range known {
		out[k] = v
	}
	for _, f := range in.UserFields() {
		v, given := out[f.Name], false
		if fv := form.Get(formFieldPrefix + f.Name); fv != "" {
			v, given = fv, true
		}
		if v == "" {
			if f.Optional {
				continue
			}
			return nil, &account.FieldError{Field: f.Name, Message: fmt.Sprintf("enter the %s", f.Title())}
		}
		if given {
			nv, err := in.Normalize(f, v)
			if err != nil {
				return nil, err
			}
			v = nv
		}
		out[f.Name] = v
	}
	return out, nil
}

// fieldMessage tells the end user what is wrong with a connection field.
func fieldMessage(in *account.Integration, err error) string {
	var fe *account.FieldError
	if errors.As(err, &fe) {
		if f := in.Field(fe.Field); f != nil {
			return fmt.Sprintf("%s: %s.", f.Title(), fe.Message)
		}
		return fmt.Sprintf("The connection cannot use this %s: %s.", fe.Field, fe.Message)
	}
	return "The connection details are not valid."
}

// afterToken fills the connection fields that come with the token: from
// the token response (answer), the callback's query and the discovery
// request, which is made with the new access token once the others are
// known. Each value is checked; an error is a *pageError with error_type
// post_install_error, and nothing is stored.
func (s *Service) afterToken(ctx context.Context, in *account.Integration, conn map[string]string, answer any, q url.Values, accessToken string) (map[string]string, *pageError) {
	if len(in.ConnectionFields) == 0 {
		return conn, nil
	}
	out := map[string]string{}
	for k, v := range conn {
		out[k] = v
	}
	set := s.fieldSetter(in, out)
	var discover bool
	for k := range in.ConnectionFields {
		f := &in.ConnectionFields[k]
		switch {
		case f.From(account.SourceTokenResponse):
			v, ok := "", false
			if answer != nil {
				v, ok = account.LookupPath(answer, f.Path)
			}
			if pe := set(f, v, ok); pe != nil {
				return nil, pe
			}
		case f.From(account.SourceCallback):
			if pe := set(f, q.Get(f.Param), q.Has(f.Param)); pe != nil {
				return nil, pe
			}
		case f.From(account.SourceDiscovery):
			discover = true
		}
	}
	if !discover {
		return out, nil
	}
	return s.afterDiscovery(ctx, in, out, accessToken, set)
}

// callbackFields fills the connection fields the callback's query names,
// before the code is exchanged: the token_url may use them.
func (s *Service) callbackFields(in *account.Integration, conn map[string]string, q url.Values) (map[string]string, *pageError) {
	out := map[string]string{}
	for k, v := range conn {
		out[k] = v
	}
	set := s.fieldSetter(in, out)
	for k := range in.ConnectionFields {
		if f := &in.ConnectionFields[k]; f.From(account.SourceCallback) {
			if pe := set(f, q.Get(f.Param), q.Has(f.Param)); pe != nil {
				return nil, pe
			}
		}
	}
	return out, nil
}

// fieldSetter returns a function that checks a connection field's value
// read after the sign-in and stores it in out.
func (s *Service) fieldSetter(in *account.Integration, out map[string]string) func(f *account.ConnectionField, v string, found bool) *pageError {
	failed := func(f *account.ConnectionField, why string) *pageError {
		s.log.Warn("a connection field could not be read after the sign-in",
			zap.String("integration", in.Name), zap.String("field", f.Name), zap.String("source", f.Source), zap.String("reason", why))
		return &pageError{http.StatusBadGateway, errPostInstall, "Connection not completed",
			fmt.Sprintf("%s signed you in, but linkgate could not read the %s it needs (%s). Nothing was changed; try again with the same link, or contact the application's support.", in.Title(), f.Title(), why)}
	}
	set := func(f *account.ConnectionField, v string, found bool) *pageError {
		if !found || v == "" {
			if f.Optional {
				return nil
			}
			return failed(f, "it is missing")
		}
		nv, err := in.Normalize(f, v)
		if err != nil {
			var fe *account.FieldError
			if errors.As(err, &fe) {
				return failed(f, fe.Message)
			}
			return failed(f, "it is not valid")
		}
		out[f.Name] = nv
		return nil
	}
	return set
}

// afterDiscovery makes the discovery request and fills the fields it finds.
func (s *Service) afterDiscovery(ctx context.Context, in *account.Integration, out map[string]string, accessToken string, set func(f *account.ConnectionField, v string, found bool) *pageError) (map[string]string, *pageError) {
	doc, err := s.discover(ctx, in, out, accessToken)
	if err != nil {
		s.log.Warn("discovery request failed", zap.String("integration", in.Name), zap.Error(err))
		return nil, &pageError{http.StatusBadGateway, errPostInstall, "Connection not completed",
			fmt.Sprintf("%s signed you in, but linkgate could not finish setting up the connection (%v). Nothing was changed; try again with the same link.", in.Title(), err)}
	}
	for k := range in.ConnectionFields {
		f := &in.ConnectionFields[k]
		if f.From(account.SourceDiscovery) {
			v, ok := account.LookupPath(doc, f.Path)
			if pe := set(f, v, ok); pe != nil {
				return nil, pe
			}
		}
	}
	return out, nil
}

// discover makes the integration's discovery request with the new access
// token. Its URL's host is checked against allowed_hosts first. The error
// holds no secret.
func (s *Service) discover(ctx context.Context, in *account.Integration, conn map[string]string, accessToken string) (any, error) {
	u, err := in.ResolveURL("discovery.url", in.Discovery.URL, conn)
	if err != nil {
		return nil, err
	}
	headers, err := in.ResolveHeaders("discovery.headers", in.Discovery.Headers, conn)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, errors.New("the discovery URL is not valid")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	req.Header.Set(in.TokenAuthorization(accessToken))
	resp, err := s.noRedirects().Do(req)
	if err != nil {
		return nil, errors.New("the discovery request did not get an answer")
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("the discovery request answered HTTP %d", resp.StatusCode)
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, 1<<20))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, errors.New("the discovery answer is not JSON")
	}
	return doc, nil
}

// noRedirects is the service's client without following redirects: a
// request that carries a token goes to the checked host only.
func (s *Service) noRedirects() *http.Client {
	c := *s.opts.Client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// withConnection returns ctx with conn's values set.
func withConnection(ctx map[string]any, conn map[string]string) map[string]any {
	if len(conn) == 0 {
		return ctx
	}
	if ctx == nil {
		ctx = map[string]any{}
	}
	for k, v := range conn {
		ctx[k] = v
	}
	return ctx
}
