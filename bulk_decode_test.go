package linkgate

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/wire"
)

// FuzzDecodeImportRow checks that a bulk import's quick decoding of a row
// gives what the strict decoder of POST /integrated-account gives, the
// same request or the same error, for any input. The seeds are the cases
// the quick walk must not let through (a key twice, NUL in a string, keys
// spelt with escapes, depth) and ones it must not refuse.
//
//	go test -run XXX -fuzz DecodeImportRow -fuzztime 60s .
func FuzzDecodeImportRow(f *testing.F) {
	for _, s := range []string{
		`{"id":"5f0e2a4c-7d3b-4c1e-9a3f-0b8d6e2f1a7c","tenant_id":"t1","integration":"crm","context":{"portal_id":"1","oauth":{"token":{"access_token":"a","refresh_token":"r","expires_in":3600}}}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"api_key":"k"}}`,
		`{"tenant_id":"t1","tenant_id":"t2","integration":"keyed","context":{"api_key":"k"}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"api_key":"k","api_key":"j"}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"a":{"b":1},"a":2}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"a":{"b":1,"c":{"b":2}},"b":3}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"list":[{"a":1},{"a":1}],"a":1}}`,
		`{"tenant_id":"t1","integr\u0061tion":"keyed","integration":"keyed","context":{"api_key":"k"}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"api_key":"k\u0000"}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"api_key":"k\\u0000"}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"k\u0000":"v"}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"a\"b":"v","a\"b":"w"}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"x":"\"y\":1,","y":1}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"api_key":"k"},"extra":1}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"api_key":"k"}} {}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"api_key":"k"}}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{"api_key":"k"}`,
		`{"tenant_id":1,"integration":"keyed"}`,
		`[{"tenant_id":"t1"}]`,
		`"just a string"`,
		`{"tenant_id":"t1","integration":"keyed","context":{"api_key":"\xff"}}`,
		`{"tenant_id":"t1","integration":"keyed","region":{"a":1,"a":1},"context":{"api_key":"k"}}`,
		`{"tenant_id":"t1","integration":"keyed","context":` + strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40) + `}`,
		`{"tenant_id":"t1","integration":"keyed","context":{` + manyKeys(70, false) + `}}`,
		`{"tenant_id":"t1","integration":"keyed","context":{` + manyKeys(70, true) + `}}`,
		``, `{}`, `{`, `}`, `]`, `"`, `{"a`, `{"":1,"":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got := decodeImportRow(raw)
		var want bulkRow
		want.err = wire.DecodeJSONValue(raw, &want.req, "row")
		if (got.err == nil) != (want.err == nil) || (got.err != nil && got.err.Error() != want.err.Error()) {
			t.Fatalf("%q: error %v, the strict decoder says %v", raw, got.err, want.err)
		}
		if got.err == nil && !reflect.DeepEqual(got.req, want.req) {
			t.Fatalf("%q: decoded %+v, the strict decoder %+v", raw, got.req, want.req)
		}
	})
}

// manyKeys is n distinct keys, the last one repeating the first when dup.
func manyKeys(n int, dup bool) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		k := i
		if dup && i == n-1 {
			k = 0
		}
		fmt.Fprintf(&b, `"k%d":%d`, k, i)
	}
	return b.String()
}
