package linkgate

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// placeholderPattern finds {env.NAME} and {file.PATH} placeholders, with or
// without a default after a colon.
var placeholderPattern = regexp.MustCompile(`\{(env|file)\.([^}:]+)(?::([^}]*))?\}`)

// emptyBecause says why a configured value that holds placeholders came out
// empty: "environment variable X is empty" (or not set), "file F is empty or
// unreadable". It returns "" when no placeholder explains it.
func emptyBecause(raw string) string {
	var why []string
	for _, m := range placeholderPattern.FindAllStringSubmatch(raw, -1) {
		kind, name, def := m[1], m[2], m[3]
		if def != "" {
			continue
		}
		switch kind {
		case "env":
			v, set := os.LookupEnv(name)
			switch {
			case !set:
				why = append(why, fmt.Sprintf("environment variable %s is not set", name))
			case strings.TrimSpace(v) == "":
				why = append(why, fmt.Sprintf("environment variable %s is empty", name))
			}
		case "file":
			if b, err := os.ReadFile(name); err != nil || strings.TrimSpace(string(b)) == "" {
				why = append(why, fmt.Sprintf("file %s is empty or unreadable", name))
			}
		}
	}
	return strings.Join(why, "; ")
}

// resolveRequired resolves the placeholders of an option that must not come
// out empty, and names the environment variable or file that left it empty.
// An option left out of the configuration (raw "") is not its concern.
func resolveRequired(repl *caddy.Replacer, option, raw string) (string, error) {
	return resolveRequiredWith(repl, false, option, raw)
}

// resolveRequiredWith is resolveRequired that, when known is set, leaves
// placeholders the replacer does not know (an account's
// {connection.<name>}) for each request.
func resolveRequiredWith(repl *caddy.Replacer, known bool, option, raw string) (string, error) {
	v := repl.ReplaceAll(raw, "")
	if known {
		v = repl.ReplaceKnown(raw, "")
	}
	if raw == "" || strings.TrimSpace(v) != "" {
		return v, nil
	}
	if why := emptyBecause(raw); why != "" {
		return "", fmt.Errorf("%s: %s", option, why)
	}
	return "", fmt.Errorf("%s: the value %q resolved to nothing", option, raw)
}
