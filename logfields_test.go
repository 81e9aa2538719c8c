package linkgate_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestOneLogFieldNamesTheAccount: every logger of the repository names an
// integrated account's id under the same field, integrated_account_id, so
// that one query finds all of an account's log lines.
func TestOneLogFieldNamesTheAccount(t *testing.T) {
	field := regexp.MustCompile(`zap\.(?:String|Stringer|Strings|Any)\("([a-z_]*account[a-z_]*)"`)
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range field.FindAllStringSubmatch(string(b), -1) {
			if m[1] != "integrated_account_id" {
				t.Errorf("%s logs an account under %q; use integrated_account_id", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
