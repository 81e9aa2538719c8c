// Command signinflood floods a linkgate console's sign-in form, as an
// outsider would: from many source addresses, each attempt fetching the
// form (for its CSRF token and cookie) and posting a password guess for a
// user name, at most -rate attempts a second in all (0: as fast as the
// workers go). It runs until -d has passed and prints the answers it got by
// status code. It is a load generator for bench/signin_flood.sh.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"
)

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func main() {
	target := flag.String("url", "http://127.0.0.1:9505/console/login", "the sign-in form")
	user := flag.String("user", "ops", "user name to guess the password of")
	addrs := flag.Int("addrs", 20, "source addresses to use, 127.0.0.10 and up")
	workers := flag.Int("c", 40, "concurrent attempts")
	dur := flag.Duration("d", 10*time.Second, "how long to flood")
	rate := flag.Int("rate", 50, "attempts a second in all; 0 for no limit")
	flag.Parse()

	// tick hands out the attempts at the chosen rate.
	tick := make(chan struct{})
	if *rate > 0 {
		go func() {
			t := time.NewTicker(time.Second / time.Duration(*rate))
			defer t.Stop()
			for range t.C {
				select {
				case tick <- struct{}{}:
				default: // every worker busy: the attempt is not made
				}
			}
		}()
	} else {
		close(tick)
	}

	var (
		mu    sync.Mutex
		codes = map[int]int{}
		errs  int
	)
	stop := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for w := range *workers {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+w%*addrs))}
		wg.Go(func() {
			tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: src}).DialContext}
			defer tr.CloseIdleConnections()
			for n := 0; time.Now().Before(stop); n++ {
				select {
				case <-tick:
				case <-time.After(time.Until(stop)):
					return
				}
				jar, _ := cookiejar.New(nil)
				hc := &http.Client{Transport: tr, Jar: jar, Timeout: time.Minute,
					CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				code, err := attempt(hc, *target, *user, "guess-"+strconv.Itoa(w)+"-"+strconv.Itoa(n))
				mu.Lock()
				if err != nil {
					errs++
				} else {
					codes[code]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	keys := make([]int, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		fmt.Printf("status_%d=%d ", k, codes[k])
	}
	fmt.Printf("errors=%d\n", errs)
}

func attempt(hc *http.Client, target, user, guess string) (int, error) {
	resp, err := hc.Get(target)
	if err != nil {
		return 0, err
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfField.FindSubmatch(page)
	if m == nil {
		return 0, fmt.Errorf("no CSRF field (status %d)", resp.StatusCode)
	}
	resp, err = hc.PostForm(target, url.Values{"csrf": {string(m[1])}, "username": {user}, "secret": {guess}})
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
