package account

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// The kinds of a connection field: what its value may look like.
const (
	// KindDNSLabel is one DNS label, e.g. a Zendesk subdomain "acme".
	KindDNSLabel = "dns_label"
	// KindHost is a host name (with an optional port) that matches the
	// integration's allowed_hosts.
	KindHost = "host"
	// KindHTTPSURL is an origin, https://host[:port], whose host matches
	// the integration's allowed_hosts (http only towards a loopback host,
	// for development).
	KindHTTPSURL = "https_url"
	// KindUUID is a UUID, e.g. an Atlassian cloud id.
	KindUUID = "uuid"
	// KindPattern is a value that matches the field's own pattern, made of
	// letters, digits and . _ ~ - only.
	KindPattern = "pattern"
)

// The sources of a connection field: where its value comes from.
const (
	// SourceUser: the import's or the link token's context, or the
	// connect page's form before OAuth starts.
	SourceUser = "user"
	// SourceTokenResponse: a field of the token endpoint's answer.
	SourceTokenResponse = "token_response"
	// SourceCallback: a query parameter of the OAuth callback.
	SourceCallback = "callback"
	// SourceDiscovery: a field of the discovery request's answer.
	SourceDiscovery = "discovery"
)

// ConnectionField is a value an account of an integration needs besides its
// credentials, e.g. the customer's subdomain or the instance URL a token
// endpoint names. It is stored in the account's context under its name
// (non-secret, shown in the API), and may be used in the integration's URLs
// and headers as {connection.<name>}.
type ConnectionField struct {
	// Name is the field's key in the account's context and in templates:
	// a lowercase letter, then lowercase letters, digits and _.
	Name string `json:"name"`
	// Label names the field on the connect page, e.g. "Zendesk subdomain".
	Label string `json:"label,omitempty"`
	// Help tells the end user where to find the value.
	Help string `json:"help,omitempty"`
	// Kind is what the value may look like: dns_label, host, https_url,
	// uuid or pattern.
	Kind string `json:"kind"`
	// Pattern is the regular expression a "pattern" value must match as a
	// whole.
	Pattern string `json:"pattern,omitempty"`
	// Source is where the value comes from: user (the default),
	// token_response, callback or discovery.
	Source string `json:"source,omitempty"`
	// Path is, for token_response and discovery, the dotted JSON path of
	// the value in the answer, e.g. "instance_url" or "0.id".
	Path string `json:"path,omitempty"`
	// Param is, for callback, the query parameter that carries the value.
	Param string `json:"param,omitempty"`
	// Optional fields may be missing; a template that uses one then fails.
	Optional bool `json:"optional,omitempty"`

	re *regexp.Regexp
}

// Discovery is a GET made with a new access token right after the token is
// obtained, whose JSON answer fills the fields with source "discovery".
type Discovery struct {
	// URL is requested; it may be a template.
	URL string `json:"url"`
	// Headers are sent with the request; values may be templates.
	Headers map[string]string `json:"headers,omitempty"`
}

// FieldError is a connection field or a resolved URL that was refused. Its
// message names the field and never holds a secret.
type FieldError struct {
	// Field is the connection field's name, or the option (base_url,
	// token_url, …) whose resolved URL was refused.
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

var (
	fieldNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	dnsLabelPattern  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	uuidPattern      = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	safeValue        = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,253}$`)
	templatePattern  = regexp.MustCompile(`\{connection\.([^{}]*)\}`)
)

// maxFieldValue bounds a connection field's value.
const maxFieldValue = 2048

// Field returns the connection field named name, or nil.
func (i *Integration) Field(name string) *ConnectionField {
	for k := range i.ConnectionFields {
		if i.ConnectionFields[k].Name == name {
			return &i.ConnectionFields[k]
		}
	}
	return nil
}

// UserFields are the connection fields the end user or the application
// gives (source user).
func (i *Integration) UserFields() []*ConnectionField {
	var out []*ConnectionField
	for k := range i.ConnectionFields {
		if i.ConnectionFields[k].source() == SourceUser {
			out = append(out, &i.ConnectionFields[k])
		}
	}
	return out
}

func (f *ConnectionField) source() string {
	if f.Source == "" {
		return SourceUser
	}
	return f.Source
}

// From reports whether the field's value comes from source.
func (f *ConnectionField) From(source string) bool { return f.source() == source }

// Title is the field's label, or its name.
func (f *ConnectionField) Title() string {
	if f.Label != "" {
		return f.Label
	}
	return f.Name
}

// Normalize checks a value given for field f of integration i and returns
// it in its stored form (a DNS label or host lowercased, an origin without
// a trailing slash). The error is a *FieldError that says what is wrong.
func (i *Integration) Normalize(f *ConnectionField, v string) (string, error) {
	bad := func(format string, args ...any) error {
		return &FieldError{Field: f.Name, Message: fmt.Sprintf(format, args...)}
	}
	if v == "" {
		return "", bad("a value is required")
	}
	if len(v) > maxFieldValue {
		return "", bad("the value is too long")
	}
	switch f.Kind {
	case KindDNSLabel:
		v = strings.ToLower(v)
		if !dnsLabelPattern.MatchString(v) {
			return "", bad("%q is not a DNS label (letters, digits and inner hyphens, at most 63, no dots)", printable(v))
		}
	case KindUUID:
		v = strings.ToLower(v)
		if !uuidPattern.MatchString(v) {
			return "", bad("%q is not a UUID", printable(v))
		}
	case KindHost:
		v = strings.ToLower(v)
		h, port := v, ""
		if hh, p, err := net.SplitHostPort(v); err == nil {
			h, port = hh, p
		}
		if !validHostName(h) || (port != "" && !validPort(port)) {
			return "", bad("%q is not a host name", printable(v))
		}
		if !i.HostAllowed("https", v) {
			return "", bad("host %s is not one of the integration's allowed_hosts", printable(v))
		}
	case KindHTTPSURL:
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(v, "#") ||
			(u.Path != "" && u.Path != "/") || u.Opaque != "" {
			return "", bad("%q is not an origin like https://host", printable(v))
		}
		host := strings.ToLower(u.Host)
		h := u.Hostname()
		if !validHostName(strings.ToLower(h)) && net.ParseIP(h) == nil {
			return "", bad("%q is not an origin like https://host", printable(v))
		}
		if p := u.Port(); p != "" && !validPort(p) {
			return "", bad("%q is not an origin like https://host", printable(v))
		}
		switch {
		case u.Scheme == "https":
		case u.Scheme == "http" && loopbackHost(h):
		default:
			return "", bad("%q is not an https URL", printable(v))
		}
		if !i.HostAllowed(u.Scheme, host) {
			return "", bad("host %s is not one of the integration's allowed_hosts", printable(host))
		}
		v = u.Scheme + "://" + host
	case KindPattern:
		if !safeValue.MatchString(v) || strings.Trim(v, ".") == "" || f.re == nil || !f.re.MatchString(v) {
			return "", bad("%q does not have the expected form", printable(v))
		}
	default:
		return "", bad("unknown kind %q", f.Kind)
	}
	return v, nil
}

// printable shortens a refused value and keeps it printable for a message.
func printable(v string) string {
	if len(v) > 80 {
		v = v[:80] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, v)
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if !dnsLabelPattern.MatchString(label) {
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536 && strconv.Itoa(n) == p
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// HostAllowed reports whether a URL host (host or host:port, as in
// url.URL.Host) of a URL with the given scheme matches one of the
// integration's allowed_hosts. A pattern is an exact host or "*." and a
// suffix (one or more labels before it); a pattern without a port matches
// only the scheme's default port, one with a port only that port.
func (i *Integration) HostAllowed(scheme, host string) bool {
	h, port := strings.ToLower(host), ""
	if hh, p, err := net.SplitHostPort(h); err == nil {
		h, port = hh, p
	}
	h = strings.TrimSuffix(h, ".")
	if port == defaultPort(scheme) {
		port = ""
	}
	for _, p := range i.allowedHosts() {
		ph, pport := p, ""
		if hh, pp, err := net.SplitHostPort(p); err == nil {
			ph, pport = hh, pp
		}
		if pport == defaultPort(scheme) {
			pport = ""
		}
		if pport != port {
			continue
		}
		if suffix, ok := strings.CutPrefix(ph, "*."); ok {
			prefix, ok := strings.CutSuffix(h, "."+suffix)
			if ok && prefix != "" && validHostName(prefix) {
				return true
			}
			continue
		}
		if h == ph {
			return true
		}
	}
	return false
}

func defaultPort(scheme string) string {
	switch scheme {
	case "https":
		return "443"
	case "http":
		return "80"
	}
	return ""
}

// allowedHosts are the configured allowed_hosts, or, when none are, the
// hosts of the integration's literal URLs.
func (i *Integration) allowedHosts() []string {
	if len(i.AllowedHosts) > 0 {
		return i.AllowedHosts
	}
	if i.defaultHosts != nil {
		return i.defaultHosts
	}
	return i.literalHosts()
}

// literalHosts are the hosts of the integration's URLs that use no
// template.
func (i *Integration) literalHosts() []string {
	var out []string
	for _, o := range i.urlOptions() {
		if o[1] == "" || strings.Contains(o[1], "{connection.") {
			continue
		}
		if u, err := url.Parse(o[1]); err == nil && u.Host != "" {
			out = append(out, strings.ToLower(u.Host))
		}
	}
	return out
}

// urlOptions are the integration's URL options that may be templates, by
// option name.
func (i *Integration) urlOptions() [][2]string {
	out := [][2]string{
		{"base_url", i.BaseURL}, {"authorize_url", i.AuthorizeURL}, {"token_url", i.TokenURL},
		{"validate_url", i.ValidateURL}, {"userinfo_url", i.UserinfoURL},
	}
	if i.Discovery != nil {
		out = append(out, [2]string{"discovery.url", i.Discovery.URL})
	}
	return out
}

// templated reports whether any URL or header of the integration uses a
// connection field.
func (i *Integration) templated() bool {
	for _, o := range i.urlOptions() {
		if strings.Contains(o[1], "{connection.") {
			return true
		}
	}
	for _, v := range i.Headers {
		if strings.Contains(v, "{connection.") {
			return true
		}
	}
	if i.Discovery != nil {
		for _, v := range i.Discovery.Headers {
			if strings.Contains(v, "{connection.") {
				return true
			}
		}
	}
	return false
}

// Templated reports whether the integration's URLs or headers depend on an
// account's connection fields, so that each account has its own.
func (i *Integration) Templated() bool { return i.templated() }

// substitute replaces the templates of s with the account's values.
func (i *Integration) substitute(option, s string, conn map[string]string) (string, error) {
	if !strings.Contains(s, "{connection.") {
		return s, nil
	}
	var ferr error
	out := templatePattern.ReplaceAllStringFunc(s, func(m string) string {
		name := m[len("{connection.") : len(m)-1]
		f := i.Field(name)
		v := conn[name]
		if f == nil || v == "" {
			if ferr == nil {
				ferr = &FieldError{Field: name, Message: fmt.Sprintf("the account has no value for connection field %s, which %s needs: set it in the account's context or reconnect the account", name, option)}
			}
			return ""
		}
		// Checked again on every use: a value stored before the
		// configuration changed, or written into the context by hand,
		// cannot steer a URL anywhere its kind does not allow.
		nv, err := i.Normalize(f, v)
		if err != nil {
			if ferr == nil {
				ferr = err
			}
			return ""
		}
		return nv
	})
	if ferr != nil {
		return "", ferr
	}
	return out, nil
}

// ResolveURL returns the URL option (base_url, authorize_url, token_url,
// validate_url, userinfo_url, discovery.url) with the account's connection
// fields filled in. Every resolved URL, literal or not, must be an absolute
// http(s) URL whose host matches allowed_hosts: nothing is sent anywhere
// else. The error is a *FieldError naming the field or the option.
func (i *Integration) ResolveURL(option, tmpl string, conn map[string]string) (string, error) {
	s, err := i.substitute(option, tmpl, conn)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Opaque != "" {
		return "", &FieldError{Field: option, Message: "the resolved URL is not an absolute http(s) URL"}
	}
	if !i.HostAllowed(u.Scheme, u.Host) {
		return "", &FieldError{Field: option, Message: fmt.Sprintf("host %s is not one of the integration's allowed_hosts", printable(u.Host))}
	}
	return s, nil
}

// ResolveHeaders returns headers with the account's connection fields
// filled in; nil when there are none.
func (i *Integration) ResolveHeaders(option string, headers map[string]string, conn map[string]string) (map[string]string, error) {
	if len(headers) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(headers))
	for k, v := range headers {
		r, err := i.substitute(option+" "+k, v, conn)
		if err != nil {
			return nil, err
		}
		out[k] = r
	}
	return out, nil
}

// Connection returns the values of the integration's connection fields
// found in an account's context, as strings (numbers written as JSON
// writes them). Fields absent from the context are absent from the map.
func (i *Integration) Connection(ctx map[string]any) map[string]string {
	if len(i.ConnectionFields) == 0 || len(ctx) == 0 {
		return nil
	}
	var out map[string]string
	for _, f := range i.ConnectionFields {
		v, ok := ctx[f.Name]
		if !ok {
			continue
		}
		s, ok := scalarString(v)
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(i.ConnectionFields))
		}
		out[f.Name] = s
	}
	return out
}

// scalarString renders a JSON scalar as a string.
func scalarString(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case json.Number:
		return t.String(), true
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(t), true
	}
	return "", false
}

// CheckContext checks the connection fields a context (an import's, a link
// token's, a PATCH's) gives for the integration: each present one must be
// valid, and each non-optional one for which required (when not nil)
// answers true must be present. It returns the context with the values in
// stored form. The error is a *FieldError naming the field.
func (i *Integration) CheckContext(ctx map[string]any, required func(*ConnectionField) bool) (map[string]any, error) {
	cloned := false
	for k := range i.ConnectionFields {
		f := &i.ConnectionFields[k]
		raw, ok := ctx[f.Name]
		if !ok || raw == nil {
			if required != nil && required(f) && !f.Optional {
				return nil, &FieldError{Field: f.Name, Message: fmt.Sprintf("connection field %s (%s) is required by integration %s: give it in context", f.Name, f.Title(), i.Name)}
			}
			continue
		}
		s, ok := scalarString(raw)
		if !ok {
			return nil, &FieldError{Field: f.Name, Message: "must be a string"}
		}
		v, err := i.Normalize(f, s)
		if err != nil {
			return nil, err
		}
		if v != raw {
			if !cloned {
				ctx, cloned = cloneMap(ctx), true
			}
			ctx[f.Name] = v
		}
	}
	return ctx, nil
}

// LookupPath finds the value at a dotted path ("authed_user.access_token",
// "0.id") in a decoded JSON document and renders a scalar as a string.
func LookupPath(doc any, path string) (string, bool) {
	v, ok := WalkPath(doc, path)
	if !ok {
		return "", false
	}
	s, ok := scalarString(v)
	return s, ok && s != ""
}

// WalkPath returns the value at a dotted path in a decoded JSON document:
// each part is an object key, or an index into an array. ok is false when
// the path leaves the document.
func WalkPath(doc any, path string) (v any, ok bool) {
	v = doc
	for part := range strings.SplitSeq(path, ".") {
		switch t := v.(type) {
		case map[string]any:
			v = t[part]
		case []any:
			n, err := strconv.Atoi(part)
			if err != nil || n < 0 || n >= len(t) {
				return nil, false
			}
			v = t[n]
		default:
			return nil, false
		}
	}
	return v, true
}

// validateConnection checks the connection options of an integration when
// the configuration loads: field declarations, templates, allowed_hosts,
// and that every literal URL's host is allowed.
func (i *Integration) validateConnection() error {
	seen := map[string]bool{}
	for k := range i.ConnectionFields {
		f := &i.ConnectionFields[k]
		if !fieldNamePattern.MatchString(f.Name) {
			return fmt.Errorf("integration %s: connection field name %q: use a lowercase letter, then lowercase letters, digits and _", i.Name, f.Name)
		}
		if seen[f.Name] {
			return fmt.Errorf("integration %s: connection field %s is declared twice", i.Name, f.Name)
		}
		seen[f.Name] = true
		if IsSecretKey(f.Name) {
			return fmt.Errorf("integration %s: connection field %s: the name looks like a secret's, and connection fields are shown in the API: rename it", i.Name, f.Name)
		}
		switch f.Kind {
		case KindDNSLabel, KindHost, KindHTTPSURL, KindUUID:
			if f.Pattern != "" {
				return fmt.Errorf("integration %s: connection field %s: pattern goes with kind pattern only", i.Name, f.Name)
			}
		case KindPattern:
			if f.Pattern == "" {
				return fmt.Errorf("integration %s: connection field %s: kind pattern needs a pattern", i.Name, f.Name)
			}
			re, err := regexp.Compile(`^(?:` + f.Pattern + `)$`)
			if err != nil {
				return fmt.Errorf("integration %s: connection field %s: pattern: %v", i.Name, f.Name, err)
			}
			f.re = re
		default:
			return fmt.Errorf("integration %s: connection field %s: kind %q is not one of dns_label, host, https_url, uuid, pattern", i.Name, f.Name, f.Kind)
		}
		switch f.source() {
		case SourceUser:
			if f.Path != "" || f.Param != "" {
				return fmt.Errorf("integration %s: connection field %s: a user field takes no path or param", i.Name, f.Name)
			}
		case SourceTokenResponse, SourceDiscovery:
			if f.Path == "" {
				return fmt.Errorf("integration %s: connection field %s: source %s needs a path", i.Name, f.Name, f.Source)
			}
			if f.Source == SourceDiscovery && i.Discovery == nil {
				return fmt.Errorf("integration %s: connection field %s: source discovery needs a discovery request", i.Name, f.Name)
			}
			if i.Auth != MethodOAuth2 {
				return fmt.Errorf("integration %s: connection field %s: source %s needs auth oauth2", i.Name, f.Name, f.Source)
			}
		case SourceCallback:
			if f.Param == "" {
				return fmt.Errorf("integration %s: connection field %s: source callback needs a param", i.Name, f.Name)
			}
			if i.Auth != MethodOAuth2 {
				return fmt.Errorf("integration %s: connection field %s: source callback needs auth oauth2", i.Name, f.Name)
			}
		default:
			return fmt.Errorf("integration %s: connection field %s: source %q is not one of user, token_response, callback, discovery", i.Name, f.Name, f.Source)
		}
	}
	if i.Discovery != nil {
		if i.Discovery.URL == "" {
			return fmt.Errorf("integration %s: discovery needs a url", i.Name)
		}
		if i.Auth != MethodOAuth2 {
			return fmt.Errorf("integration %s: discovery needs auth oauth2", i.Name)
		}
	}
	// Templates name declared fields only. A field that comes after the
	// token (token_response, discovery) cannot be used in the authorize_url
	// or token_url, which are needed before it exists; a callback field can
	// be used in the token_url.
	check := func(option, s string) error {
		rest := templatePattern.ReplaceAllStringFunc(s, func(m string) string {
			return ""
		})
		if strings.Contains(rest, "{connection.") {
			return fmt.Errorf("integration %s: %s: a template is written {connection.<name>}", i.Name, option)
		}
		for _, m := range templatePattern.FindAllStringSubmatch(s, -1) {
			f := i.Field(m[1])
			if f == nil {
				return fmt.Errorf("integration %s: %s uses {connection.%s}, but no connection field %s is declared", i.Name, option, m[1], m[1])
			}
			// The callback names its fields before the code is exchanged
			// (Zoho's accounts-server picks the token endpoint).
			if (option == "authorize_url" && !f.From(SourceUser)) || (option == "token_url" && !f.From(SourceUser) && !f.From(SourceCallback)) {
				return fmt.Errorf("integration %s: %s uses {connection.%s}, which is known only after the token is obtained", i.Name, option, m[1])
			}
			if option == "discovery.url" && f.From(SourceDiscovery) {
				return fmt.Errorf("integration %s: %s uses {connection.%s}, which discovery itself finds", i.Name, option, m[1])
			}
		}
		return nil
	}
	for _, o := range i.urlOptions() {
		if err := check(o[0], o[1]); err != nil {
			return err
		}
	}
	for k, v := range i.Headers {
		if err := check("headers "+k, v); err != nil {
			return err
		}
	}
	if i.Discovery != nil {
		for k, v := range i.Discovery.Headers {
			if err := check("discovery.headers "+k, v); err != nil {
				return err
			}
		}
	}
	for _, p := range i.AllowedHosts {
		if err := validHostPattern(p); err != nil {
			return fmt.Errorf("integration %s: allowed_hosts %q: %v", i.Name, p, err)
		}
	}
	templated := i.templated()
	if templated && len(i.AllowedHosts) == 0 {
		return fmt.Errorf("integration %s: allowed_hosts is required when a URL or header uses {connection.…}: list the hosts its accounts may reach, e.g. *.zendesk.com", i.Name)
	}
	if len(i.AllowedHosts) == 0 {
		i.defaultHosts = i.literalHosts()
	}
	for _, o := range i.urlOptions() {
		if o[1] == "" || strings.Contains(o[1], "{connection.") {
			continue
		}
		u, err := url.Parse(o[1])
		if err != nil || u.Host == "" {
			continue // reported by Validate
		}
		if !i.HostAllowed(u.Scheme, u.Host) {
			return fmt.Errorf("integration %s: %s host %s is not one of allowed_hosts", i.Name, o[0], u.Host)
		}
	}
	for k := range i.Headers {
		if strings.ContainsAny(k, " \t\r\n:") || k == "" {
			return fmt.Errorf("integration %s: headers: %q is not a header name", i.Name, k)
		}
	}
	return nil
}

// validHostPattern checks one allowed_hosts entry: host[:port] or
// *.suffix[:port], lowercase.
func validHostPattern(p string) error {
	if p != strings.ToLower(p) {
		return fmt.Errorf("write it in lowercase")
	}
	h := p
	if hh, port, err := net.SplitHostPort(p); err == nil {
		if !validPort(port) {
			return fmt.Errorf("bad port")
		}
		h = hh
	}
	if strings.Contains(p, "/") {
		return fmt.Errorf("a host, not a URL: leave out the scheme and path")
	}
	if suffix, ok := strings.CutPrefix(h, "*."); ok {
		if !validHostName(suffix) || !strings.Contains(suffix, ".") {
			return fmt.Errorf("*. must be followed by a domain of at least two labels")
		}
		return nil
	}
	if net.ParseIP(h) != nil {
		return nil
	}
	if !validHostName(h) {
		return fmt.Errorf("not a host name or *.domain")
	}
	return nil
}
