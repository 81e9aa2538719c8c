package linkgate

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/presets"
)

// withPreset returns in started from its preset: the catalogue entry's
// options, with every option the configuration writes on top of them (the
// configuration's win, whole: a scopes list replaces the preset's).
func withPreset(in *account.Integration) (*account.Integration, error) {
	raw, ok := presets.Lookup(in.Preset)
	if !ok {
		return nil, fmt.Errorf("integration %s: preset %q is not in linkgate's catalogue: run `caddy linkgate-presets` to list the presets", in.Name, in.Preset)
	}
	var base map[string]json.RawMessage
	if err := json.Unmarshal(raw, &base); err != nil {
		return nil, fmt.Errorf("integration %s: preset %s: %w", in.Name, in.Preset, err)
	}
	own, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("integration %s: %w", in.Name, err)
	}
	var over map[string]json.RawMessage
	if err := json.Unmarshal(own, &over); err != nil {
		return nil, fmt.Errorf("integration %s: %w", in.Name, err)
	}
	for k, v := range over {
		base[k] = v
	}
	merged, err := json.Marshal(base)
	if err != nil {
		return nil, fmt.Errorf("integration %s: %w", in.Name, err)
	}
	out := new(account.Integration)
	dec := json.NewDecoder(bytes.NewReader(merged))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return nil, fmt.Errorf("integration %s: preset %s does not fit this version of linkgate: %w", in.Name, in.Preset, err)
	}
	return out, nil
}
