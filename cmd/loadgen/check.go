package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// batchState is what GET /v1/batches/{id} tells.
type batchState struct {
	ID         string `json:"id"`
	TotalStock int64  `json:"total_stock"`
	Remaining  int64  `json:"remaining"`
	Claimed    int64  `json:"claimed"`
	Rules      struct {
		PerUserLimit int `json:"per_user_limit"`
	} `json:"rules"`
}

func (g *gen) getBatch(ctx context.Context) (batchState, error) {
	var b batchState
	code, raw, err := g.adminCall(ctx, http.MethodGet, "/v1/batches/"+url.PathEscape(g.batchID), nil, "", &b)
	if err != nil {
		return b, err
	}
	if code != http.StatusOK {
		return b, fmt.Errorf("GET /v1/batches/%s: %d %s", g.batchID, code, raw)
	}
	return b, nil
}

// sample picks the shoppers whose usable view is compared: all of them when
// they are at most --check-sample, else an even spread.
func (g *gen) sample(prefix string) []string {
	n := g.cfg.Users
	k := g.cfg.CheckSample
	if k <= 0 || k > n {
		k = n
	}
	out := make([]string, 0, k)
	for i := range k {
		out = append(out, fmt.Sprintf("%s%06d", prefix, i*n/k))
	}
	return out
}

// parallel runs fn over items with n goroutines.
func parallel[T any](ctx context.Context, n int, items []T, fn func(T)) {
	ch := make(chan T)
	var wg sync.WaitGroup
	for range min(n, max(len(items), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				fn(it)
			}
		}()
	}
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		ch <- it
	}
	close(ch)
	wg.Wait()
}

type couponList struct {
	Coupons []struct {
		ID      string `json:"id"`
		BatchID string `json:"batch_id"`
	} `json:"coupons"`
	NextCursor string `json:"next_cursor"`
}

// usableOf lists the user's usable coupons of the batch (every page), read
// once the view has applied minPos; a 503 (not caught up yet) is retried.
func (g *gen) usableOf(ctx context.Context, user string, minPos uint64) ([]string, error) {
	var ids []string
	cursor := ""
	deadline := time.Now().Add(g.cfg.Settle)
	for {
		q := url.Values{"status": {"usable"}, "limit": {"200"}}
		if minPos > 0 {
			q.Set("min_position", fmt.Sprint(minPos))
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page couponList
		code, raw, err := g.adminCall(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(user)+"/coupons?"+q.Encode(), nil, "", &page)
		if err == nil && code == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			sleepUntil(ctx, time.Now().Add(200*time.Millisecond))
			continue
		}
		if err != nil {
			return nil, err
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("%d %s", code, strings.TrimSpace(string(raw)))
		}
		for _, c := range page.Coupons {
			if c.BatchID == g.batchID {
				ids = append(ids, c.ID)
			}
		}
		if page.NextCursor == "" || len(page.Coupons) == 0 {
			slices.Sort(ids)
			return ids, nil
		}
		cursor = page.NextCursor
	}
}

// check verifies every invariant for the acknowledged claims. fromView: the
// claims were read back from the usable view (check-only without a result),
// so comparing that view with them proves nothing.
func (g *gen) check(ctx context.Context, acks []Ack, maxPos uint64, clientViolations []string, fromClient bool, sample []string) []CheckResult {
	var out []CheckResult
	add := func(name string, ok bool, format string, args ...any) {
		out = append(out, CheckResult{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	accepted := int64(len(acks))

	b, err := g.getBatch(ctx)
	if err != nil {
		add("batch readable", false, "%v", err)
		return out
	}
	limit := b.Rules.PerUserLimit

	// 1. Not oversold.
	add("accepted <= stock", accepted <= b.TotalStock, "accepted %d, stock %d", accepted, b.TotalStock)

	// 2. Nobody above the per-user limit.
	perUser := map[string][]string{}
	for _, a := range acks {
		perUser[a.User] = append(perUser[a.User], a.Coupon)
	}
	var over []string
	maxHeld := 0
	for u, cs := range perUser {
		maxHeld = max(maxHeld, len(cs))
		if limit > 0 && len(cs) > limit {
			over = append(over, fmt.Sprintf("%s has %d", u, len(cs)))
		}
	}
	slices.Sort(over)
	add("per-user limit", len(over) == 0, "limit %d, %d shoppers hold coupons, at most %d each%s", limit, len(perUser), maxHeld, listTail(over))

	// 3. What the client saw is consistent (idempotency, owners).
	if fromClient {
		add("idempotent answers", len(clientViolations) == 0, "%d inconsistencies in the 201s%s", len(clientViolations), listTail(clientViolations))
	}

	// 4. Stock consumed in the guard, and 5. the ops counter, settle to the claims.
	deadline := time.Now().Add(g.cfg.Settle)
	for {
		if b.TotalStock-b.Remaining == accepted && b.Claimed == accepted {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		sleepUntil(ctx, time.Now().Add(250*time.Millisecond))
		if nb, err := g.getBatch(ctx); err == nil {
			b = nb
		}
	}
	add("stock consumed", b.TotalStock-b.Remaining == accepted, "total %d - remaining %d = %d, accepted %d", b.TotalStock, b.Remaining, b.TotalStock-b.Remaining, accepted)
	add("ops claimed counter", b.Claimed == accepted, "claimed %d, accepted %d", b.Claimed, accepted)

	// 6. The usable view lists exactly each sampled shopper's coupons.
	if fromClient {
		var mu sync.Mutex
		var bad []string
		parallel(ctx, 16, sample, func(u string) {
			got, err := g.usableOf(ctx, u, maxPos)
			want := slices.Clone(perUser[u])
			slices.Sort(want)
			var msg string
			switch {
			case err != nil:
				msg = fmt.Sprintf("%s: %v", u, err)
			case !slices.Equal(got, want):
				msg = fmt.Sprintf("%s: view %v, acknowledged %v", u, got, want)
			}
			if msg != "" {
				mu.Lock()
				bad = append(bad, msg)
				mu.Unlock()
			}
		})
		slices.Sort(bad)
		add("usable view", len(bad) == 0, "%d shoppers compared at min_position %d, %d differ%s", len(sample), maxPos, len(bad), listTail(bad))
	} else {
		add("usable view", true, "not compared: the claims were read from it")
	}

	// 7. Every accepted coupon has its coupon.claimed.v1 in the event store.
	var mu sync.Mutex
	var bad []string
	parallel(ctx, 16, acks, func(a Ack) {
		if msg := g.claimEvent(ctx, a); msg != "" {
			mu.Lock()
			bad = append(bad, msg)
			mu.Unlock()
		}
	})
	slices.Sort(bad)
	add("claim events", len(bad) == 0, "%d coupons read from the event store, %d without a matching %s%s", len(acks), len(bad), domain.EvCouponClaimed, listTail(bad))

	// 8. The history report counts exactly the accepted claims.
	var rep struct {
		Claimed int64 `json:"claimed"`
	}
	var repErr error
	deadline = time.Now().Add(g.cfg.Settle)
	for {
		path := fmt.Sprintf("/v1/reports/batches/%s?min_position=%d", url.PathEscape(g.batchID), maxPos)
		code, raw, err := g.adminCall(ctx, http.MethodGet, path, nil, "", &rep)
		repErr = err
		if err == nil && code != http.StatusOK {
			repErr = fmt.Errorf("%d %s", code, strings.TrimSpace(string(raw)))
		}
		if (repErr == nil && rep.Claimed == accepted) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		sleepUntil(ctx, time.Now().Add(250*time.Millisecond))
	}
	if repErr != nil {
		add("report claimed", false, "%v", repErr)
	} else {
		add("report claimed", rep.Claimed == accepted, "report says %d claimed, accepted %d", rep.Claimed, accepted)
	}

	// 9. The service's own verification, if it has it.
	if g.cfg.Verify {
		out = append(out, g.verify(ctx, acks))
	}
	return out
}

// claimEvent checks one coupon's audit trail; "" when it is right.
func (g *gen) claimEvent(ctx context.Context, a Ack) string {
	var trail struct {
		Events []struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		} `json:"events"`
	}
	var code int
	var raw []byte
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		code, raw, err = g.adminCall(ctx, http.MethodGet, "/v1/coupons/"+url.PathEscape(a.Coupon)+"/events", nil, "", &trail)
		if err == nil && code < 500 {
			break
		}
		sleepUntil(ctx, time.Now().Add(200*time.Millisecond))
	}
	if err != nil {
		return fmt.Sprintf("%s: %v", a.Coupon, err)
	}
	if code != http.StatusOK {
		return fmt.Sprintf("%s: %d %s", a.Coupon, code, strings.TrimSpace(string(raw)))
	}
	n := 0
	for _, e := range trail.Events {
		if e.Type != domain.EvCouponClaimed {
			continue
		}
		n++
		var ev domain.CouponClaimed
		if err := json.Unmarshal(e.Data, &ev); err != nil {
			return fmt.Sprintf("%s: unreadable claim event: %v", a.Coupon, err)
		}
		if ev.UserID != a.User || ev.Terms.BatchID != g.batchID {
			return fmt.Sprintf("%s: claimed by %q on batch %q, acknowledged to %s on %s", a.Coupon, ev.UserID, ev.Terms.BatchID, a.User, g.batchID)
		}
	}
	if n != 1 {
		return fmt.Sprintf("%s: %d claim events", a.Coupon, n)
	}
	return ""
}

// verify runs POST /v1/admin/verify: a drift naming this batch, one of its
// coupons or one of its shoppers fails; others (other batches on a shared
// service) are only reported.
func (g *gen) verify(ctx context.Context, acks []Ack) CheckResult {
	var rep struct {
		Drifts []struct {
			Component string `json:"component"`
			Entity    string `json:"entity"`
			Field     string `json:"field"`
			Expected  string `json:"expected"`
			Actual    string `json:"actual"`
		} `json:"drifts"`
		Pending []string `json:"pending"`
		Events  int      `json:"events"`
	}
	code, raw, err := g.adminCallT(ctx, 3*time.Minute, http.MethodPost, "/v1/admin/verify", nil, "", &rep)
	switch {
	case err != nil:
		return CheckResult{Name: "service verify", OK: false, Detail: err.Error()}
	case code == http.StatusServiceUnavailable || code == http.StatusNotFound:
		return CheckResult{Name: "service verify", OK: true, Detail: fmt.Sprintf("skipped: the service answered %d", code)}
	case code != http.StatusOK:
		return CheckResult{Name: "service verify", OK: false, Detail: fmt.Sprintf("%d %s", code, strings.TrimSpace(string(raw)))}
	}
	mine := map[string]bool{}
	users := map[string]bool{}
	for _, a := range acks {
		mine[a.Coupon] = true
		users[a.User] = true
	}
	var ours, others []string
	for _, d := range rep.Drifts {
		s := fmt.Sprintf("%s %s %s: expected %s, actual %s", d.Component, d.Entity, d.Field, d.Expected, d.Actual)
		hit := strings.Contains(d.Entity, g.batchID)
		for _, w := range strings.Fields(d.Entity) {
			if mine[w] || users[w] {
				hit = true
			}
		}
		if hit {
			ours = append(ours, s)
		} else {
			others = append(others, s)
		}
	}
	detail := fmt.Sprintf("%d events read, %d drifts on this batch, %d elsewhere", rep.Events, len(ours), len(others))
	if len(ours) > 0 {
		detail += listTail(ours)
	} else if len(others) > 0 {
		detail += " (not ours, e.g. " + others[0] + ")"
	}
	return CheckResult{Name: "service verify", OK: len(ours) == 0, Detail: detail}
}

func listTail(items []string) string {
	if len(items) == 0 {
		return ""
	}
	const show = 5
	s := ": " + strings.Join(items[:min(show, len(items))], "; ")
	if len(items) > show {
		s += fmt.Sprintf("; ... %d more", len(items)-show)
	}
	return s
}

// checkOnly reruns the invariants of cfg.BatchID: with the acknowledged
// claims of a result file when it has them, else with the claims read back
// from the usable view of --user-prefix 0..--users.
func (g *gen) checkOnly(ctx context.Context) (*Result, error) {
	cfg := g.cfg
	g.batchID = cfg.BatchID
	b, err := g.getBatch(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{URL: g.base, BatchID: g.batchID, Stock: b.TotalStock, Limit: b.Rules.PerUserLimit, Users: cfg.Users, UserPrefix: cfg.UserPrefix}
	var acks []Ack
	fromClient := false
	if cfg.In != "" {
		prev, err := readResult(cfg.In)
		switch {
		case err == nil && prev.BatchID == g.batchID:
			acks, fromClient = prev.Acknowledged, true
			res.Users, res.UserPrefix = prev.Users, prev.UserPrefix
			res.Violations = prev.Violations
			fmt.Fprintf(g.out, "checking batch %s with the %d claims acknowledged in %s\n", g.batchID, len(acks), cfg.In)
		case err == nil:
			fmt.Fprintf(g.out, "%s is about batch %s, not %s: ignored\n", cfg.In, prev.BatchID, g.batchID)
		case !errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(g.out, "%s: %v: ignored\n", cfg.In, err)
		}
	}
	if !fromClient {
		if res.UserPrefix == "" {
			return nil, errors.New("--check-only without a result file for this batch needs --user-prefix (and --users)")
		}
		all := make([]string, res.Users)
		for i := range all {
			all[i] = fmt.Sprintf("%s%06d", res.UserPrefix, i)
		}
		fmt.Fprintf(g.out, "checking batch %s with the claims read from the usable view of %d shoppers %s*\n", g.batchID, len(all), res.UserPrefix)
		var mu sync.Mutex
		var bad []string
		parallel(ctx, 32, all, func(u string) {
			ids, err := g.usableOf(ctx, u, 0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", u, err))
				return
			}
			for _, id := range ids {
				acks = append(acks, Ack{User: u, Coupon: id})
			}
		})
		if len(bad) > 0 {
			return nil, fmt.Errorf("reading the usable view: %s", listTail(bad))
		}
		res.Notes = append(res.Notes, "claims read back from the usable view (no client record): coupons locked or used since are not counted")
	}
	var maxPos uint64
	for _, a := range acks {
		maxPos = max(maxPos, a.Position)
	}
	res.Acknowledged = acks
	res.Claims.Accepted = int64(len(acks))
	sample := []string{}
	if fromClient {
		g.cfg.Users = res.Users
		sample = g.sample(res.UserPrefix)
	}
	res.Invariants = g.check(ctx, acks, maxPos, res.Violations, fromClient, sample)
	// Do not overwrite the run's result with a check-only one.
	if g.cfg.Out == cfg.In {
		g.cfg.Out = ""
	}
	g.cfg.Plot = ""
	return g.finish(res)
}
