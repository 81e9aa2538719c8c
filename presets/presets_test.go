package presets

import (
	"encoding/json"
	"sort"
	"testing"
)

func TestLookupAndNames(t *testing.T) {
	names := Names()
	if !sort.StringsAreSorted(names) {
		t.Fatalf("Names() not sorted: %v", names)
	}
	for _, want := range []string{"hubspot", "salesforce", "zendesk"} {
		b, ok := Lookup(want)
		if !ok {
			t.Fatalf("Lookup(%q) missing", want)
		}
		var obj map[string]any
		if err := json.Unmarshal(b, &obj); err != nil {
			t.Fatalf("%s: %v", want, err)
		}
		for _, forbidden := range []string{"name", "client_id", "client_secret"} {
			if _, ok := obj[forbidden]; ok {
				t.Errorf("%s: a preset must not carry %q", want, forbidden)
			}
		}
	}
	if _, ok := Lookup("no-such-provider"); ok {
		t.Fatal("Lookup of an unknown name succeeded")
	}
}
