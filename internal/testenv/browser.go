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
// returns a chromedp context on its first tab, bounded by timeout. The
// browser itself lives until the test ends: timeout bounds that tab and the
// tabs opened from its context with chromedp.NewContext; NewTab opens a tab
// with a budget of its own, for tests that run one flow after another in
// one browser. Without Chromium the test skips saying what to install, or
// fails when CI is set. flags are added to the browser's command line.
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
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// Start the browser on the first tab, so later tabs share it. The
	// process is bound to the context it is started with, so that one has
	// no deadline; the start itself gets the budget.
	started := make(chan error, 1)
	go func() {
		_, err := chromedp.Run(bctx, chromedp.Title())
		started <- err
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting Chromium: %v", err)
		}
	case <-time.After(timeout):
		cancelBrowser()
		t.Fatalf("Chromium did not start within %v", timeout)
	}
	ctx, cancelTimeout := context.WithTimeout(bctx, timeout)
	t.Cleanup(cancelTimeout)
	return ctx
}

// NewTab opens a tab in the browser of ctx (NewBrowser's, or any tab's) that
// is bounded by timeout alone: the deadline of ctx does not carry over, so
// each flow of a test that runs several in one browser gets the whole
// budget, and a flow that hangs still fails. opts are chromedp's (e.g.
// chromedp.WithNewBrowserContext). The tab closes when cancel is called or
// the test ends.
func NewTab(t testing.TB, ctx context.Context, timeout time.Duration, opts ...chromedp.ContextOption) (context.Context, context.CancelFunc) {
	t.Helper()
	tab, cancelTab := chromedp.NewContext(context.WithoutCancel(ctx), opts...)
	tctx, cancelTimeout := context.WithTimeout(tab, timeout)
	cancel := func() {
		cancelTimeout()
		cancelTab()
	}
	t.Cleanup(cancel)
	return tctx, cancel
}
