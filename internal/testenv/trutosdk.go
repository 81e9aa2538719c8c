package testenv

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Truto's published Link SDK, the browser package that Truto's customers
// load: the page tests drive it against linkgate unchanged. It is MIT
// licensed; it is fetched from the npm registry at test time rather than
// kept in the repository.
const (
	TrutoLinkSDKPackage = "@truto/truto-link-sdk@1.1.30"
	// trutoLinkSDKSum is the SHA-256 of the package's dist/main.js, so a
	// changed package fails the test instead of being trusted.
	trutoLinkSDKSum = "144d5a2030767b667672201ad57a08d437da499aeede03839c876ebb86451ecd"
)

// TrutoLinkSDK returns dist/main.js of Truto's Link SDK (an ES module whose
// default export is authenticate). It is taken from $LINKGATE_TRUTO_LINK_SDK
// (a path to main.js) when set, else packed once with npm into the user's
// cache directory. Without npm the test skips saying what to install, or
// fails when CI is set.
func TrutoLinkSDK(t testing.TB) []byte {
	t.Helper()
	if p := os.Getenv("LINKGATE_TRUTO_LINK_SDK"); p != "" {
		return checkSDK(t, p)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "linkgate", "truto-link-sdk-1.1.30")
	main := filepath.Join(dir, "main.js")
	if _, err := os.Stat(main); err == nil {
		return checkSDK(t, main)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the Truto Link SDK tests need npm (apt-get install -y npm): %v", err)
		}
		t.Skipf("skipping: it needs npm to fetch %s (apt-get install -y npm), or LINKGATE_TRUTO_LINK_SDK", TrutoLinkSDKPackage)
	}
	tmp := t.TempDir()
	cmd := exec.Command(npm, "pack", TrutoLinkSDKPackage, "--pack-destination", tmp, "--silent")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm pack %s: %v\n%s", TrutoLinkSDKPackage, err, out)
	}
	b, err := mainFromTarball(filepath.Join(tmp, "truto-truto-link-sdk-1.1.30.tgz"))
	if err != nil {
		t.Fatalf("reading the packed Link SDK: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	part := main + ".part"
	if err := os.WriteFile(part, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(part, main); err != nil {
		t.Fatal(err)
	}
	return checkSDK(t, main)
}

func checkSDK(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the Truto Link SDK: %v", err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != trutoLinkSDKSum {
		t.Fatalf("%s has SHA-256 %s, not the %s of %s", path, got, trutoLinkSDKSum, TrutoLinkSDKPackage)
	}
	return b
}

func mainFromTarball(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, err
		}
		if h.Name == "package/dist/main.js" {
			return io.ReadAll(io.LimitReader(tr, 16<<20))
		}
	}
}
