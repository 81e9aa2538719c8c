package refresh

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

const (
	// CodeOutcomeUnknown marks an active account whose last refresh was
	// sent and whose answer never arrived (a crash, a call past its hard
	// limit): the provider may have rotated its refresh token.
	CodeOutcomeUnknown = "refresh_outcome_unknown"
	// CodeAnswerLost is the last_error code of an account whose refresh
	// token was refused after an answer to it was lost: the grant was most
	// likely rotated away by a call whose answer never arrived, not revoked
	// by the user.
	CodeAnswerLost = "refresh_answer_lost"
)

// exchange presents cur's refresh token to the token endpoint: the call is
// recorded in the journal before it leaves and its answer the moment it
// arrives, and an answer that never came marks the account.
func (r *Refresher) exchange(ctx context.Context, cur *account.Account, integ *account.Integration) (*tokenResult, *Error) {
	rt := cur.Credentials.RefreshToken
	log := r.log.With(zap.String("account", cur.ID), zap.String("integration", integ.Name))
	if r.outcomeUnknown(cur) {
		log.Warn("sending again a refresh token whose previous refresh was sent and never answered; if the provider rotated it then, it refuses this one and the account is reported with refresh_answer_lost")
	}
	var entry *journalEntry
	if j := r.opts.Journal; j != nil {
		var err error
		if entry, err = j.sent(cur.ID, rt, r.opts.Now()); err != nil {
			// Without the record a crash during the call could lose the
			// grant silently: do not send.
			log.Error("writing the refresh journal failed; not refreshing", zap.Error(err))
			return nil, &Error{Class: Transient, Code: "journal_unavailable", Message: "the refresh journal could not be written"}
		}
	}
	res, cerr := r.callRefresh(integ, rt)
	if res != nil {
		res.entry = entry
	}
	if entry != nil && cerr == nil {
		c := cur.Credentials
		res.apply(&c)
		if err := r.opts.Journal.answered(entry, c); err != nil {
			log.Error("writing a token answer to the refresh journal failed; saving it to the store only", zap.Error(err))
		}
	}
	if cerr != nil {
		if res != nil && res.uncertain {
			r.markUnknown(ctx, cur)
		}
		if entry != nil {
			r.opts.Journal.settle()
		}
	}
	return res, cerr
}

// settle tells the journal what became of a successful call's answer: saved
// (or superseded by other credentials) it is no longer needed; not saved, it
// is kept for the next attempt on the account.
func (r *Refresher) settle(res *tokenResult, err error) {
	if res == nil || res.entry == nil {
		return
	}
	if err != nil && !errors.Is(err, errSuperseded) {
		r.opts.Journal.keep(res.entry)
		return
	}
	r.opts.Journal.settle()
}

// markUnknown records that cur's refresh was sent and not answered:
// durably in the store, so that whichever process refreshes the account
// next reports a refusal as refresh_answer_lost, and in memory in case the
// store does not take it.
func (r *Refresher) markUnknown(ctx context.Context, cur *account.Account) {
	r.mu.Lock()
	r.unknown[cur.ID] = digest(cur.Credentials.RefreshToken)
	r.mu.Unlock()
	at := r.opts.Now()
	if _, err := r.save(ctx, cur, &cur.Credentials, func(a *account.Account) ([]tokenstore.Event, error) {
		if a.Status == account.StatusActive {
			a.LastError = &account.Error{Code: CodeOutcomeUnknown, At: at,
				Message: "a refresh was sent and its answer never arrived; if the provider rotated the refresh token then, the next refresh is refused"}
		}
		return nil, nil
	}); err != nil && !errors.Is(err, errSuperseded) {
		r.log.Warn("recording an unanswered refresh in the store failed", zap.String("account", cur.ID), zap.Error(err))
	}
}

// outcomeUnknown reports whether cur's refresh token was sent once already
// with no answer received.
func (r *Refresher) outcomeUnknown(cur *account.Account) bool {
	if cur.LastError != nil && cur.LastError.Code == CodeOutcomeUnknown {
		return true
	}
	r.mu.Lock()
	d, ok := r.unknown[cur.ID]
	r.mu.Unlock()
	return ok && d == digest(cur.Credentials.RefreshToken)
}

// clearUnknown drops the mark of an unanswered refresh from an account
// whose refresh has now succeeded.
func clearUnknown(a *account.Account) {
	if a.LastError != nil && a.LastError.Code == CodeOutcomeUnknown {
		a.LastError = nil
	}
}

// answerLost turns the refusal of a refresh token whose earlier refresh was
// never answered into refresh_answer_lost: the application must not take it
// for a user's revocation.
func (r *Refresher) answerLost(cur *account.Account, res *tokenResult, e *Error) *Error {
	if e.Class != Revoked || !r.outcomeUnknown(cur) {
		return e
	}
	r.mu.Lock()
	delete(r.unknown, cur.ID)
	r.mu.Unlock()
	return &Error{Class: Revoked, Code: CodeAnswerLost,
		Message: "the provider refused a refresh token after an earlier refresh with it was sent and its answer lost (the gateway stopped or the call outlived its hard limit); the provider most likely rotated it then: reconnect the account"}
}

// recoverEntry applies what the journal kept for cur, under its refresh
// lock: an answer that never reached the store is saved (done is true, the
// account returned); a call sent without an answer marks the account and
// lets the refresh go on.
func (r *Refresher) recoverEntry(ctx context.Context, cur *account.Account, integ *account.Integration) (*account.Account, bool, error) {
	j := r.opts.Journal
	if j == nil {
		return nil, false, nil
	}
	e := j.pending(cur.ID)
	if e == nil {
		return nil, false, nil
	}
	log := r.log.With(zap.String("account", cur.ID), zap.String("integration", integ.Name))
	if digest(cur.Credentials.RefreshToken) != e.Sent {
		// Saved before the crash, or replaced since: nothing to do.
		j.done(e)
		return nil, false, nil
	}
	if e.Answer == nil {
		log.Warn("a refresh of this account was sent before the gateway stopped and its answer was lost: the old refresh token will be sent again; if the provider rotated it, the account is reported with refresh_answer_lost")
		r.markUnknown(ctx, cur)
		j.done(e)
		return nil, false, nil
	}
	saved, err := r.save(ctx, cur, &cur.Credentials, func(a *account.Account) ([]tokenstore.Event, error) {
		a.Credentials.AccessToken = e.Answer.AccessToken
		a.Credentials.RefreshToken = e.Answer.RefreshToken
		a.Credentials.TokenType = e.Answer.TokenType
		a.Credentials.Expiry = e.Answer.Expiry
		a.Credentials.Scope = e.Answer.Scope
		clearUnknown(a)
		at := r.opts.Now()
		c, err := a.Apply(account.UpstreamOK, nil, at)
		if err != nil {
			return nil, err
		}
		return tokenstore.EventsFor(c, a, at), nil
	})
	if errors.Is(err, errSuperseded) {
		j.done(e)
		return nil, false, nil
	}
	if err != nil {
		log.Warn("applying a token answer kept in the refresh journal failed; trying again later", zap.Error(err))
		return nil, true, &Error{Class: Transient, Code: "store_unavailable", Message: "the refreshed credentials could not be saved"}
	}
	j.done(e)
	log.Info("saved a token answer kept in the refresh journal")
	r.invalidate(cur.ID)
	return saved, true, nil
}

// recoverJournal applies every entry the journal holds for recovery.
func (r *Refresher) recoverJournal(ctx context.Context) {
	j := r.opts.Journal
	if j == nil {
		return
	}
	ids := j.pendingIDs()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.LockTimeout+time.Minute)
	defer cancel()
	for _, id := range ids {
		if _, err := r.wait(ctx, id, modeRecover, ""); err != nil && ctx.Err() == nil {
			if errors.Is(err, tokenstore.ErrNotFound) {
				if e := j.pending(id); e != nil {
					j.done(e)
				}
				continue
			}
			r.log.Debug("recovering a refresh from the journal", zap.String("account", id), zap.Error(err))
		}
	}
}
