package linkgate

import "testing"

func TestCutQueryParam(t *testing.T) {
	tests := []struct {
		raw, rest, value string
		found            bool
	}{
		{"a=1&integrated_account_id=x%2Fy&b=2", "a=1&b=2", "x/y", true},
		{"integrated_account_id=x", "", "x", true},
		{"z=9&a=1", "z=9&a=1", "", false},
		{"not_integrated_account_id=x&b=2", "not_integrated_account_id=x&b=2", "", false},
		{"b=2&integrated_account_id=1&integrated_account_id=2", "b=2", "2", true},
	}
	for _, tt := range tests {
		rest, v, found := cutQueryParam(tt.raw, "integrated_account_id")
		if rest != tt.rest || v != tt.value || found != tt.found {
			t.Errorf("cutQueryParam(%q) = %q %q %v, want %q %q %v", tt.raw, rest, v, found, tt.rest, tt.value, tt.found)
		}
	}
}
