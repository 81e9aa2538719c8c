package refresh

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
)

func clientCredentialsEnv(t *testing.T) (*env, *account.Account) {
	e := newEnv(t, nil)
	e.integ.Auth = account.MethodClientCredentials
	a := &account.Account{
		ID: "acc-cc", TenantID: "t", Integration: e.integ.Name, Method: account.MethodClientCredentials,
		Status: account.StatusActive,
	}
	if err := e.store.CreateAccount(context.Background(), a, nil); err != nil {
		t.Fatal(err)
	}
	return e, e.get(a.ID)
}

func TestClientCredentialsTokenIsFetchedOnceAndCached(t *testing.T) {
	e, a := clientCredentialsEnv(t)
	var wg sync.WaitGroup
	toks := make([]string, 200)
	for i := range toks {
		wg.Go(func() {
			c, err := e.r.Credentials(context.Background(), a)
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
			toks[i] = c.AccessToken
		})
	}
	wg.Wait()
	e.remember(toks[0])
	if n := e.auth.TokenCalls("client_credentials"); n != 1 {
		t.Fatalf("%d client_credentials calls, want 1", n)
	}
	if _, ok := e.auth.ValidAccessToken(toks[0]); !ok {
		t.Fatal("the gateway's token is not valid")
	}
	for _, tok := range toks {
		if tok != toks[0] {
			t.Fatal("callers got different tokens")
		}
	}
	// Near expiry (inside the skew) a new one is fetched.
	e.clock.Add(time.Hour - 30*time.Second)
	if _, err := e.r.Credentials(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the token is fetched again inside the skew", func() bool {
		e.r.mu.Lock()
		defer e.r.mu.Unlock()
		return e.r.tokens[e.integ.Name].AccessToken != toks[0]
	})
	if n := e.auth.TokenCalls("client_credentials"); n != 2 {
		t.Fatalf("%d client_credentials calls, want 2", n)
	}
	// An upstream 401 drops it and fetches another one, once.
	e.clock.Add(2 * time.Minute)
	c, _ := e.r.Credentials(context.Background(), a)
	e.remember(c.AccessToken)
	c2, retry, err := e.r.Unauthorized(context.Background(), a, c)
	if err != nil || !retry || c2.AccessToken == c.AccessToken {
		t.Fatalf("401 on a client-credentials account: retry=%v %v", retry, err)
	}
	e.remember(c2.AccessToken)
	// The brand-new token is refused too: no further fetch, the account
	// needs attention.
	calls := e.auth.TokenCalls("client_credentials")
	_, retry, err = e.r.Unauthorized(context.Background(), a, c2)
	if retry || !errors.Is(err, ErrNeedsReauth) {
		t.Fatalf("401 on a fresh client-credentials token: retry=%v %v", retry, err)
	}
	if e.auth.TokenCalls("client_credentials") != calls {
		t.Fatal("a 401 on a fresh token fetched another one")
	}
	if got := e.get(a.ID); got.Status != account.StatusNeedsReauth {
		t.Fatalf("status %s", got.Status)
	}
}

func TestClientCredentialsMisconfiguredLeavesTheAccountAlone(t *testing.T) {
	e, a := clientCredentialsEnv(t)
	e.integ.ClientSecret = "wrong-secret-9d"
	e.remember("wrong-secret-9d")
	_, err := e.r.Credentials(context.Background(), a)
	var re *Error
	if !errors.As(err, &re) || re.Class != Misconfigured {
		t.Fatalf("got %v, want misconfigured", err)
	}
	if got := e.get(a.ID); got.Status != account.StatusActive {
		t.Fatalf("status %s", got.Status)
	}
	if evs := e.eventsOf(a.ID); len(evs) != 0 {
		t.Fatalf("events %v", evs)
	}
}
