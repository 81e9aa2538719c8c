// Package presets is linkgate's catalogue of integration presets: the
// configuration of well-known providers (endpoints, scopes, quirks), so that
// an operator names a preset and adds only a client id and secret.
//
// A preset is one JSON object in the shape of account.Integration without
// name, client_id and client_secret; the options an operator writes are
// applied on top of it. Each preset records the provider's documentation
// page its endpoints were taken from in "docs".
package presets

import (
	"embed"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"
)

//go:embed catalogue/*.json
var files embed.FS

// catalogue maps a preset's name (its file name without .json) to its
// JSON object. It is read once from the embedded files and never changed.
var catalogue = load()

func load() map[string]json.RawMessage {
	entries, err := files.ReadDir("catalogue")
	if err != nil {
		panic(fmt.Sprintf("presets: reading the embedded catalogue: %v", err))
	}
	m := make(map[string]json.RawMessage, len(entries))
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".json")
		b, err := files.ReadFile(path.Join("catalogue", e.Name()))
		if err != nil {
			panic(fmt.Sprintf("presets: reading %s: %v", e.Name(), err))
		}
		// A malformed file is a build mistake, caught by the tests; it
		// must not make a preset that merges into garbage.
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(b, &obj); err != nil {
			panic(fmt.Sprintf("presets: %s is not a JSON object: %v", e.Name(), err))
		}
		m[name] = json.RawMessage(b)
	}
	return m
}

// Lookup returns the integration JSON of the preset called name.
// The caller must not modify the returned bytes.
func Lookup(name string) (json.RawMessage, bool) {
	b, ok := catalogue[name]
	return b, ok
}

// Names returns the names of all presets, sorted.
func Names() []string {
	names := make([]string, 0, len(catalogue))
	for n := range catalogue {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
