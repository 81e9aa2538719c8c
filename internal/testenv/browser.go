package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is where the page tests expect Debian's Chromium.
const ChromiumPath = "/usr/bin/chromium"

// NewBrowser starts headless Chromium with a fresh profile and none of its
// own network traffic (this machine reaches nothing but loopback), and
// returns a chromedp context on its first tab, bounded by timeout. Without
// Chromium the test skips saying what to install, or fails when CI is set.
// flags are added to the browser's command line.
func NewBrowser(t testing.TB, timeout time.Duration, flags ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		// On a developer's fresh machine the page tests say what they need
		// and skip; in CI, which installs Chromium, a missing browser fails.
		if os.Getenv("CI") != "" {
			t.Fatalf("the page tests need Chromium at %s: apt-get install -y chromium: %v", ChromiumPath, err)
		}
		t.Skipf("skipping a page test: it needs Chromium at %s (apt-get install -y chromium; .ci/run installs it)", ChromiumPath)
	}
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ChromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	}, flags...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(bctx, timeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancelBrowser()
		cancelAlloc()
	})
	// Start the browser on the first tab, so later tabs share it.
	if _, err := chromedp.Run(ctx, chromedp.Title()); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}
