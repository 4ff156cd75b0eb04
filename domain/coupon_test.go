package domain_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// The coupons below are claimed at claimStart from windowRules: valid on
// [validFrom, validUntil), locked at lockAt for hold.
var (
	validFrom  = at(2 * day)
	validUntil = at(20 * day)
	lockAt     = at(5 * day)
)

const hold = 15 * time.Minute

func claimedEv() *domain.CouponClaimed {
	return &domain.CouponClaimed{CouponID: "c-1", UserID: "u-1", IdempotencyKey: "idem-1",
		Terms: windowRules().TermsAt("b-1", 0, claimStart), At: claimStart}
}

func lockedEv(order string) *domain.CouponLocked {
	return &domain.CouponLocked{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", OrderID: order,
		HoldUntil: lockAt.Add(hold), At: lockAt}
}

func redeemedEv(order string) *domain.CouponRedeemed {
	return &domain.CouponRedeemed{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", OrderID: order,
		PaymentID: "pay-" + order, Discount: 5000, At: lockAt.Add(time.Minute)}
}

func unlockedEv(order, reason string) *domain.CouponUnlocked {
	return &domain.CouponUnlocked{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", OrderID: order,
		Reason: reason, At: lockAt.Add(2 * time.Minute)}
}

func returnedEv(order string, usable bool) *domain.CouponReturned {
	return &domain.CouponReturned{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", OrderID: order,
		UsableAgain: usable, At: lockAt.Add(day)}
}

func expiredEv() *domain.CouponExpired {
	return &domain.CouponExpired{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", ValidUntil: validUntil, At: validUntil}
}

// coupon rebuilds c-1 from its claim followed by evs.
func coupon(evs ...domain.Event) *domain.Coupon {
	return domain.NewCouponFromHistory("c-1", append([]domain.Event{claimedEv()}, evs...))
}

var (
	usableC       = func() *domain.Coupon { return coupon() }
	lockedByA     = func() *domain.Coupon { return coupon(lockedEv("o-A")) }
	redeemedByA   = func() *domain.Coupon { return coupon(lockedEv("o-A"), redeemedEv("o-A")) }
	cancelledA    = func() *domain.Coupon { return coupon(lockedEv("o-A"), unlockedEv("o-A", domain.UnlockOrderCancelled)) }
	holdExpiredA  = func() *domain.Coupon { return coupon(lockedEv("o-A"), unlockedEv("o-A", domain.UnlockHoldExpired)) }
	returnedA     = func() *domain.Coupon { return coupon(lockedEv("o-A"), redeemedEv("o-A"), returnedEv("o-A", true)) }
	returnedLateA = func() *domain.Coupon {
		return coupon(lockedEv("o-A"), redeemedEv("o-A"), returnedEv("o-A", false), expiredEv())
	}
	expiredC       = func() *domain.Coupon { return coupon(expiredEv()) }
	cancelledThenB = func() *domain.Coupon {
		return coupon(lockedEv("o-A"), unlockedEv("o-A", domain.UnlockOrderCancelled), lockedEv("o-B"))
	}
	returnedThenB = func() *domain.Coupon {
		return coupon(lockedEv("o-A"), redeemedEv("o-A"), returnedEv("o-A", true), lockedEv("o-B"))
	}
	returnedThenRedeemedB = func() *domain.Coupon {
		return coupon(lockedEv("o-A"), redeemedEv("o-A"), returnedEv("o-A", true), lockedEv("o-B"), redeemedEv("o-B"))
	}
	missingC = func() *domain.Coupon { return domain.NewCouponFromHistory("c-1", nil) }
	voidedC  = func() *domain.Coupon { return domain.VoidClaim("c-1", "b-1", "u-1", "append_failed", claimStart) }
)

type couponCase struct {
	name   string
	c      func() *domain.Coupon
	op     func(c *domain.Coupon) error
	kind   error               // nil: success
	want   []string            // events recorded
	status domain.CouponStatus // status afterwards ("" : unchanged)
}

func runCouponCases(t *testing.T, cases []couponCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c()
			before := couponSnapshot(c)
			changesBefore := len(c.Changes())
			err := tc.op(c)
			wantErr(t, err, tc.kind)
			wantNames(t, c.Changes()[changesBefore:], tc.want...)
			if tc.kind != nil || len(tc.want) == 0 {
				if !reflect.DeepEqual(couponSnapshot(c), before) {
					t.Fatalf("state changed:\n%+v\nwas\n%+v", couponSnapshot(c), before)
				}
			}
			if tc.status != "" && c.Status != tc.status {
				t.Fatalf("Status = %s, want %s", c.Status, tc.status)
			}
		})
	}
}

func TestCouponLock(t *testing.T) {
	lock := func(order, user string, now time.Time) func(*domain.Coupon) error {
		return func(c *domain.Coupon) error { return c.Lock(order, user, hold, now) }
	}
	runCouponCases(t, []couponCase{
		{"usable → locked", usableC, lock("o-A", "u-1", lockAt), nil, []string{domain.EvCouponLocked}, domain.CouponLockedSt},
		{"at valid_from", usableC, lock("o-A", "u-1", validFrom), nil, []string{domain.EvCouponLocked}, domain.CouponLockedSt},
		{"last instant of validity", usableC, lock("o-A", "u-1", validUntil.Add(-time.Nanosecond)), nil, []string{domain.EvCouponLocked}, domain.CouponLockedSt},
		{"same order again", lockedByA, lock("o-A", "u-1", lockAt.Add(time.Minute)), nil, nil, domain.CouponLockedSt},
		{"same order again after the hold ran out", lockedByA, lock("o-A", "u-1", lockAt.Add(time.Hour)), nil, nil, domain.CouponLockedSt},
		{"other order", lockedByA, lock("o-B", "u-1", lockAt), domain.ErrConflict, nil, domain.CouponLockedSt},
		{"another user", usableC, lock("o-A", "u-2", lockAt), domain.ErrForbidden, nil, domain.CouponUsable},
		{"another user, locked", lockedByA, lock("o-A", "u-2", lockAt), domain.ErrForbidden, nil, domain.CouponLockedSt},
		{"before valid_from", usableC, lock("o-A", "u-1", validFrom.Add(-time.Nanosecond)), domain.ErrOutsideValidity, nil, domain.CouponUsable},
		{"at valid_until", usableC, lock("o-A", "u-1", validUntil), domain.ErrOutsideValidity, nil, domain.CouponUsable},
		{"after valid_until, not yet marked expired", usableC, lock("o-A", "u-1", validUntil.Add(day)), domain.ErrOutsideValidity, nil, domain.CouponUsable},
		{"expired", expiredC, lock("o-A", "u-1", lockAt), domain.ErrOutsideValidity, nil, domain.CouponExpiredS},
		{"redeemed, same order", redeemedByA, lock("o-A", "u-1", lockAt), domain.ErrConflict, nil, domain.CouponUsed},
		{"redeemed, other order", redeemedByA, lock("o-B", "u-1", lockAt), domain.ErrConflict, nil, domain.CouponUsed},
		{"after cancel, a new order", cancelledA, lock("o-B", "u-1", lockAt.Add(time.Hour)), nil, []string{domain.EvCouponLocked}, domain.CouponLockedSt},
		{"returned, a new order", returnedA, lock("o-B", "u-1", lockAt.Add(2*day)), nil, []string{domain.EvCouponLocked}, domain.CouponLockedSt},
		{"missing coupon", missingC, lock("o-A", "u-1", lockAt), domain.ErrNotFound, nil, ""},
		{"voided claim", voidedC, lock("o-A", "u-1", lockAt), domain.ErrNotFound, nil, domain.CouponVoided},
		{"empty order id", usableC, lock("", "u-1", lockAt), domain.ErrInvalidArgument, nil, domain.CouponUsable},
		{"order id with control char", usableC, lock("o\x00A", "u-1", lockAt), domain.ErrInvalidArgument, nil, domain.CouponUsable},
		{"empty user id", usableC, lock("o-A", "", lockAt), domain.ErrInvalidArgument, nil, domain.CouponUsable},
		{"user id too long", usableC, lock("o-A", strings.Repeat("u", domain.MaxIDLen+1), lockAt), domain.ErrInvalidArgument, nil, domain.CouponUsable},
	})
}

func TestCouponLockFacts(t *testing.T) {
	c := usableC()
	wantErr(t, c.Lock("o-A", "u-1", hold, lockAt), nil)
	e := c.Changes()[0].(*domain.CouponLocked)
	want := lockedEv("o-A")
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("CouponLocked = %+v, want %+v", e, want)
	}
	if c.OrderID != "o-A" || !c.HoldUntil.Equal(lockAt.Add(hold)) {
		t.Fatalf("OrderID %q, HoldUntil %v", c.OrderID, c.HoldUntil)
	}
	if c.Version() != 1 || c.BaseVersion() != 0 {
		t.Fatalf("Version, BaseVersion = %d, %d; want 1, 0", c.Version(), c.BaseVersion())
	}
}

func TestCouponRedeem(t *testing.T) {
	redeem := func(order, payment string, discount int64, now time.Time) func(*domain.Coupon) error {
		return func(c *domain.Coupon) error { return c.Redeem(order, payment, discount, now) }
	}
	after := lockAt.Add(time.Minute)
	runCouponCases(t, []couponCase{
		{"locked, same order", lockedByA, redeem("o-A", "pay-o-A", 5000, after), nil, []string{domain.EvCouponRedeemed}, domain.CouponUsed},
		{"zero discount", lockedByA, redeem("o-A", "pay-o-A", 0, after), nil, []string{domain.EvCouponRedeemed}, domain.CouponUsed},
		{"max discount", lockedByA, redeem("o-A", "pay-o-A", domain.MaxMoney, after), nil, []string{domain.EvCouponRedeemed}, domain.CouponUsed},
		// The hold is released by an explicit event; until then the payment may confirm it.
		{"locked, hold ran out but not released", lockedByA, redeem("o-A", "pay-o-A", 5000, lockAt.Add(time.Hour)), nil, []string{domain.EvCouponRedeemed}, domain.CouponUsed},
		{"repeat", redeemedByA, redeem("o-A", "pay-o-A", 5000, after), nil, nil, domain.CouponUsed},
		{"repeat with another payment id", redeemedByA, redeem("o-A", "pay-2", 5000, after), nil, nil, domain.CouponUsed},
		{"locked by another order", lockedByA, redeem("o-B", "pay-B", 5000, after), domain.ErrConflict, nil, domain.CouponLockedSt},
		{"redeemed by another order", redeemedByA, redeem("o-B", "pay-B", 5000, after), domain.ErrConflict, nil, domain.CouponUsed},
		{"usable, not locked", usableC, redeem("o-A", "pay-o-A", 5000, after), domain.ErrConflict, nil, domain.CouponUsable},
		{"cancelled before the payment", cancelledA, redeem("o-A", "pay-o-A", 5000, after), domain.ErrConflict, nil, domain.CouponUsable},
		{"hold released before the payment", holdExpiredA, redeem("o-A", "pay-o-A", 5000, after), domain.ErrConflict, nil, domain.CouponUsable},
		{"expired", expiredC, redeem("o-A", "pay-o-A", 5000, after), domain.ErrConflict, nil, domain.CouponExpiredS},
		{"negative discount", lockedByA, redeem("o-A", "pay-o-A", -1, after), domain.ErrInvalidArgument, nil, domain.CouponLockedSt},
		{"discount over max", lockedByA, redeem("o-A", "pay-o-A", domain.MaxMoney+1, after), domain.ErrInvalidArgument, nil, domain.CouponLockedSt},
		{"empty order id", lockedByA, redeem("", "pay-o-A", 5000, after), domain.ErrInvalidArgument, nil, domain.CouponLockedSt},
		{"empty payment id", lockedByA, redeem("o-A", "", 5000, after), domain.ErrInvalidArgument, nil, domain.CouponLockedSt},
		{"missing coupon", missingC, redeem("o-A", "pay-o-A", 5000, after), domain.ErrNotFound, nil, ""},
		{"voided claim", voidedC, redeem("o-A", "pay-o-A", 5000, after), domain.ErrNotFound, nil, domain.CouponVoided},
	})

	t.Run("facts", func(t *testing.T) {
		c := lockedByA()
		wantErr(t, c.Redeem("o-A", "pay-o-A", 5000, after), nil)
		if e := c.Changes()[0]; !reflect.DeepEqual(e, redeemedEv("o-A")) {
			t.Fatalf("CouponRedeemed = %+v, want %+v", e, redeemedEv("o-A"))
		}
		if c.OrderID != "o-A" || c.PaymentID != "pay-o-A" {
			t.Fatalf("OrderID %q, PaymentID %q", c.OrderID, c.PaymentID)
		}
	})
	t.Run("negative discount message names the field", func(t *testing.T) {
		err := lockedByA().Redeem("o-A", "p", -5, after)
		if err == nil || !strings.HasPrefix(err.Error(), "discount: ") {
			t.Fatalf("error %v", err)
		}
	})
}

func TestCouponUnlock(t *testing.T) {
	unlock := func(order string) func(*domain.Coupon) error {
		return func(c *domain.Coupon) error { return c.Unlock(order, lockAt.Add(2*time.Minute)) }
	}
	runCouponCases(t, []couponCase{
		{"locked, same order", lockedByA, unlock("o-A"), nil, []string{domain.EvCouponUnlocked}, domain.CouponUsable},
		{"repeat", cancelledA, unlock("o-A"), nil, nil, domain.CouponUsable},
		{"after the hold expired", holdExpiredA, unlock("o-A"), nil, nil, domain.CouponUsable},
		{"repeat after another order locked it", cancelledThenB, unlock("o-A"), nil, nil, domain.CouponLockedSt},
		{"the new order after a repeat", cancelledThenB, unlock("o-B"), nil, []string{domain.EvCouponUnlocked}, domain.CouponUsable},
		{"locked by another order", lockedByA, unlock("o-B"), domain.ErrConflict, nil, domain.CouponLockedSt},
		{"redeemed by the same order", redeemedByA, unlock("o-A"), domain.ErrConflict, nil, domain.CouponUsed},
		{"redeemed by another order", redeemedByA, unlock("o-B"), domain.ErrConflict, nil, domain.CouponUsed},
		{"usable, never locked", usableC, unlock("o-A"), domain.ErrConflict, nil, domain.CouponUsable},
		{"expired, never locked", expiredC, unlock("o-A"), domain.ErrConflict, nil, domain.CouponExpiredS},
		{"missing coupon", missingC, unlock("o-A"), domain.ErrNotFound, nil, ""},
		{"voided claim", voidedC, unlock("o-A"), domain.ErrNotFound, nil, domain.CouponVoided},
		{"empty order id", lockedByA, unlock(""), domain.ErrInvalidArgument, nil, domain.CouponLockedSt},
	})

	t.Run("facts", func(t *testing.T) {
		c := lockedByA()
		wantErr(t, c.Unlock("o-A", lockAt.Add(2*time.Minute)), nil)
		if e := c.Changes()[0]; !reflect.DeepEqual(e, unlockedEv("o-A", domain.UnlockOrderCancelled)) {
			t.Fatalf("CouponUnlocked = %+v", e)
		}
		if c.OrderID != "" || !c.HoldUntil.IsZero() {
			t.Fatalf("OrderID %q, HoldUntil %v after unlock", c.OrderID, c.HoldUntil)
		}
	})
}

func TestCouponReleaseExpiredHold(t *testing.T) {
	holdEnd := lockAt.Add(hold)
	release := func(now time.Time) func(*domain.Coupon) error {
		return func(c *domain.Coupon) error { c.ReleaseExpiredHold(now); return nil }
	}
	runCouponCases(t, []couponCase{
		{"hold still running", lockedByA, release(holdEnd.Add(-time.Nanosecond)), nil, nil, domain.CouponLockedSt},
		{"hold due", lockedByA, release(holdEnd), nil, []string{domain.EvCouponUnlocked}, domain.CouponUsable},
		{"hold long overdue", lockedByA, release(holdEnd.Add(day)), nil, []string{domain.EvCouponUnlocked}, domain.CouponUsable},
		{"usable", usableC, release(holdEnd), nil, nil, domain.CouponUsable},
		{"already released", holdExpiredA, release(holdEnd.Add(day)), nil, nil, domain.CouponUsable},
		{"redeemed", redeemedByA, release(holdEnd.Add(day)), nil, nil, domain.CouponUsed},
		{"expired", expiredC, release(holdEnd.Add(day)), nil, nil, domain.CouponExpiredS},
	})
	t.Run("facts", func(t *testing.T) {
		c := lockedByA()
		c.ReleaseExpiredHold(holdEnd)
		want := &domain.CouponUnlocked{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", OrderID: "o-A",
			Reason: domain.UnlockHoldExpired, At: holdEnd}
		if e := c.Changes()[0]; !reflect.DeepEqual(e, want) {
			t.Fatalf("CouponUnlocked = %+v, want %+v", e, want)
		}
		// The order may still cancel: that is a no-op now.
		wantErr(t, c.Unlock("o-A", holdEnd.Add(time.Minute)), nil)
		if len(c.Changes()) != 1 {
			t.Fatalf("recorded %v", names(c.Changes()))
		}
	})
}

func TestCouponReturn(t *testing.T) {
	ret := func(order string, now time.Time) func(*domain.Coupon) error {
		return func(c *domain.Coupon) error { return c.Return(order, now) }
	}
	inside := lockAt.Add(day)
	runCouponCases(t, []couponCase{
		{"redeemed, still valid", redeemedByA, ret("o-A", inside), nil, []string{domain.EvCouponReturned}, domain.CouponUsable},
		{"redeemed, last valid instant", redeemedByA, ret("o-A", validUntil.Add(-time.Nanosecond)), nil, []string{domain.EvCouponReturned}, domain.CouponUsable},
		{"redeemed, at valid_until", redeemedByA, ret("o-A", validUntil), nil, []string{domain.EvCouponReturned, domain.EvCouponExpired}, domain.CouponExpiredS},
		{"redeemed, after validity", redeemedByA, ret("o-A", validUntil.Add(day)), nil, []string{domain.EvCouponReturned, domain.EvCouponExpired}, domain.CouponExpiredS},
		{"repeat (usable again)", returnedA, ret("o-A", inside), nil, nil, domain.CouponUsable},
		{"repeat (expired)", returnedLateA, ret("o-A", validUntil.Add(2*day)), nil, nil, domain.CouponExpiredS},
		{"repeat after another order locked it", returnedThenB, ret("o-A", inside), nil, nil, domain.CouponLockedSt},
		{"repeat after another order redeemed it", returnedThenRedeemedB, ret("o-A", inside), nil, nil, domain.CouponUsed},
		{"the new order after a repeat", returnedThenRedeemedB, ret("o-B", inside), nil, []string{domain.EvCouponReturned}, domain.CouponUsable},
		{"redeemed by another order", redeemedByA, ret("o-B", inside), domain.ErrConflict, nil, domain.CouponUsed},
		{"locked, not redeemed", lockedByA, ret("o-A", inside), domain.ErrConflict, nil, domain.CouponLockedSt},
		{"usable, never redeemed", usableC, ret("o-A", inside), domain.ErrConflict, nil, domain.CouponUsable},
		{"expired, never redeemed", expiredC, ret("o-A", inside), domain.ErrConflict, nil, domain.CouponExpiredS},
		{"missing coupon", missingC, ret("o-A", inside), domain.ErrNotFound, nil, ""},
		{"voided claim", voidedC, ret("o-A", inside), domain.ErrNotFound, nil, domain.CouponVoided},
		{"empty order id", redeemedByA, ret("", inside), domain.ErrInvalidArgument, nil, domain.CouponUsed},
	})

	t.Run("usable again: facts, and it can be used again", func(t *testing.T) {
		c := redeemedByA()
		wantErr(t, c.Return("o-A", inside), nil)
		want := &domain.CouponReturned{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", OrderID: "o-A", UsableAgain: true, At: inside}
		if e := c.Changes()[0]; !reflect.DeepEqual(e, want) {
			t.Fatalf("CouponReturned = %+v, want %+v", e, want)
		}
		if c.OrderID != "" || c.PaymentID != "" {
			t.Fatalf("OrderID %q, PaymentID %q after return", c.OrderID, c.PaymentID)
		}
		wantErr(t, c.Lock("o-B", "u-1", hold, inside), nil)
		wantErr(t, c.Redeem("o-B", "pay-B", 100, inside), nil)
		wantNames(t, c.Changes(), domain.EvCouponReturned, domain.EvCouponLocked, domain.EvCouponRedeemed)
	})
	t.Run("after validity: facts", func(t *testing.T) {
		c := redeemedByA()
		late := validUntil.Add(day)
		wantErr(t, c.Return("o-A", late), nil)
		r := c.Changes()[0].(*domain.CouponReturned)
		e := c.Changes()[1].(*domain.CouponExpired)
		if r.UsableAgain || r.OrderID != "o-A" || !r.At.Equal(late) {
			t.Fatalf("CouponReturned = %+v", r)
		}
		want := &domain.CouponExpired{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", ValidUntil: validUntil, At: late}
		if !reflect.DeepEqual(e, want) {
			t.Fatalf("CouponExpired = %+v, want %+v", e, want)
		}
		wantErr(t, c.Lock("o-B", "u-1", hold, late), domain.ErrOutsideValidity)
	})
}

func TestCouponExpire(t *testing.T) {
	expire := func(now time.Time) func(*domain.Coupon) error {
		return func(c *domain.Coupon) error { c.Expire(now); return nil }
	}
	runCouponCases(t, []couponCase{
		{"usable, not due", usableC, expire(validUntil.Add(-time.Nanosecond)), nil, nil, domain.CouponUsable},
		{"usable, due", usableC, expire(validUntil), nil, []string{domain.EvCouponExpired}, domain.CouponExpiredS},
		{"usable, overdue", usableC, expire(validUntil.Add(day)), nil, []string{domain.EvCouponExpired}, domain.CouponExpiredS},
		{"returned usable, due", returnedA, expire(validUntil), nil, []string{domain.EvCouponExpired}, domain.CouponExpiredS},
		{"locked, overdue", lockedByA, expire(validUntil.Add(day)), nil, nil, domain.CouponLockedSt},
		{"redeemed, overdue", redeemedByA, expire(validUntil.Add(day)), nil, nil, domain.CouponUsed},
		{"already expired", expiredC, expire(validUntil.Add(day)), nil, nil, domain.CouponExpiredS},
		{"voided claim", voidedC, expire(validUntil.Add(day)), nil, nil, domain.CouponVoided},
	})
	t.Run("facts", func(t *testing.T) {
		c := usableC()
		c.Expire(validUntil.Add(time.Hour))
		want := &domain.CouponExpired{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", ValidUntil: validUntil, At: validUntil.Add(time.Hour)}
		if e := c.Changes()[0]; !reflect.DeepEqual(e, want) {
			t.Fatalf("CouponExpired = %+v, want %+v", e, want)
		}
	})
	t.Run("a locked coupon expires once released", func(t *testing.T) {
		c := lockedByA()
		late := validUntil.Add(time.Hour)
		c.Expire(late)
		wantErr(t, c.Unlock("o-A", late), nil)
		c.Expire(late)
		wantNames(t, c.Changes(), domain.EvCouponUnlocked, domain.EvCouponExpired)
	})
}

func TestVoidClaim(t *testing.T) {
	c := domain.VoidClaim("c-9", "b-1", "u-1", "append_failed", claimStart)
	if c.Exists() {
		t.Fatal("a voided claim exists")
	}
	if c.Status != domain.CouponVoided || c.UserID != "u-1" || c.Terms.BatchID != "b-1" {
		t.Fatalf("state %+v", c)
	}
	if c.Version() != 0 || c.BaseVersion() != -1 {
		t.Fatalf("Version, BaseVersion = %d, %d; want 0, -1 (appended with NoStream)", c.Version(), c.BaseVersion())
	}
	want := &domain.CouponClaimVoided{CouponID: "c-9", BatchID: "b-1", UserID: "u-1", Reason: "append_failed", At: claimStart}
	wantNames(t, c.Changes(), domain.EvCouponClaimVoided)
	if !reflect.DeepEqual(c.Changes()[0], want) {
		t.Fatalf("CouponClaimVoided = %+v", c.Changes()[0])
	}
	// Rebuilt from the store it still does not exist.
	if domain.NewCouponFromHistory("c-9", c.Changes()).Exists() {
		t.Fatal("a rebuilt voided claim exists")
	}
}

func TestClaimCoupon(t *testing.T) {
	t.Run("valid_days: validity counts from the claim; rule version carried", func(t *testing.T) {
		b := issued(t, "b-1", baseRules(), 10)
		nr := laterRules() // claim window [t0+3d, t0+12d), amount_off 6000
		wantErr(t, b.ChangeRules(nr, "admin-1", t0), nil)
		now := at(4*day + 3*time.Hour + 25*time.Minute)

		c, err := domain.ClaimCoupon("c-1", "u-1", "idem-1", b, now)
		wantErr(t, err, nil)
		wantNames(t, c.Changes(), domain.EvCouponClaimed)
		e := c.Changes()[0].(*domain.CouponClaimed)
		want := domain.CouponTerms{BatchID: "b-1", RuleVersion: 1, Kind: domain.KindThreshold, Issuer: domain.IssuerPlatform,
			Threshold: 20000, AmountOff: 6000, Scope: domain.Scope{Kind: domain.ScopeAll},
			ValidFrom: now, ValidUntil: now.Add(7 * day)}
		if !termsEqual(e.Terms, want) {
			t.Fatalf("terms = %+v\nwant    %+v", e.Terms, want)
		}
		if e.CouponID != "c-1" || e.UserID != "u-1" || e.IdempotencyKey != "idem-1" || !e.At.Equal(now) {
			t.Fatalf("CouponClaimed = %+v", e)
		}
		if !c.Exists() || c.Status != domain.CouponUsable || c.Source != "claimed" || c.UserID != "u-1" ||
			c.IdempotencyKey != "idem-1" || !c.ObtainedAt.Equal(now) || c.Terms.RuleVersion != 1 {
			t.Fatalf("state %+v", c)
		}
		if c.Version() != 0 || c.BaseVersion() != -1 {
			t.Fatalf("Version, BaseVersion = %d, %d", c.Version(), c.BaseVersion())
		}
	})
	t.Run("window: validity copied from the rules", func(t *testing.T) {
		r := windowRules()
		r.Kind, r.Threshold, r.AmountOff, r.PercentOff, r.MaxDiscount = domain.KindPercent, 0, 0, 20, 800
		r.Issuer, r.Scope, r.Exclusive = "m-1", domain.Scope{Kind: domain.ScopeMerchant, IDs: []string{"m-1"}}, true
		b := issued(t, "b-2", r, 10)
		now := claimStart.Add(time.Hour)
		c, err := domain.ClaimCoupon("c-2", "u-1", "", b, now)
		wantErr(t, err, nil)
		want := domain.CouponTerms{BatchID: "b-2", Kind: domain.KindPercent, Issuer: "m-1", PercentOff: 20, MaxDiscount: 800,
			Scope: r.Scope, Exclusive: true, ValidFrom: validFrom, ValidUntil: validUntil}
		if !termsEqual(c.Terms, want) {
			t.Fatalf("terms = %+v\nwant    %+v", c.Terms, want)
		}
		if !c.ValidAt(validFrom) || c.ValidAt(validFrom.Add(-time.Nanosecond)) || c.ValidAt(validUntil) {
			t.Fatal("ValidAt is not [valid_from, valid_until)")
		}
	})
	// Pause and stop are checked atomically by the stock guard before ClaimCoupon.
	t.Run("pause and stop are the stock guard's business", func(t *testing.T) {
		b := issued(t, "b-1", baseRules(), 10)
		wantErr(t, b.Pause("a", t0), nil)
		_, err := domain.ClaimCoupon("c-1", "u-1", "", b, claimStart)
		wantErr(t, err, nil)
	})

	targeted := baseRules()
	targeted.Audience = domain.AudienceTargeted
	shortWindow := windowRules()
	shortWindow.ValidFrom, shortWindow.ValidUntil = claimStart, claimStart.Add(2*day) // ends before the claim window
	cases := []struct {
		name     string
		couponID string
		userID   string
		batch    func(t *testing.T) *domain.Batch
		now      time.Time
		kind     error
	}{
		{"empty coupon id", "", "u-1", nil, claimStart, domain.ErrInvalidArgument},
		{"empty user id", "c-1", "", nil, claimStart, domain.ErrInvalidArgument},
		{"user id with control char", "c-1", "u\x01", nil, claimStart, domain.ErrInvalidArgument},
		{"missing batch", "c-1", "u-1", func(*testing.T) *domain.Batch { return domain.NewBatchFromHistory("b-x", nil) }, claimStart, domain.ErrNotFound},
		{"targeted batch", "c-1", "u-1", func(t *testing.T) *domain.Batch { return issued(t, "b-1", targeted, 10) }, claimStart, domain.ErrNotClaimable},
		{"before the claim window", "c-1", "u-1", nil, claimStart.Add(-time.Nanosecond), domain.ErrNotClaimable},
		{"at the claim window's end", "c-1", "u-1", nil, claimEnd, domain.ErrNotClaimable},
		{"after the claim window", "c-1", "u-1", nil, claimEnd.Add(day), domain.ErrNotClaimable},
		{"validity window already over", "c-1", "u-1", func(t *testing.T) *domain.Batch { return issued(t, "b-1", shortWindow, 10) },
			shortWindow.ValidUntil, domain.ErrNotClaimable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := issued(t, "b-1", baseRules(), 10)
			if tc.batch != nil {
				b = tc.batch(t)
			}
			c, err := domain.ClaimCoupon(tc.couponID, tc.userID, "k", b, tc.now)
			wantErr(t, err, tc.kind)
			if c != nil {
				t.Fatal("a refused claim returned a coupon")
			}
			if len(b.Changes()) != 0 {
				t.Fatal("claim recorded on the batch")
			}
		})
	}
	t.Run("validity window still open near its end", func(t *testing.T) {
		b := issued(t, "b-1", shortWindow, 10)
		c, err := domain.ClaimCoupon("c-1", "u-1", "", b, shortWindow.ValidUntil.Add(-time.Second))
		wantErr(t, err, nil)
		if !c.ValidAt(shortWindow.ValidUntil.Add(-time.Second)) {
			t.Fatal("claimed coupon not valid at its claim time")
		}
	})
}

func TestGrantCoupon(t *testing.T) {
	targeted := baseRules()
	targeted.Audience = domain.AudienceTargeted
	inside := claimStart.Add(time.Hour)

	t.Run("targeted batch", func(t *testing.T) {
		b := issued(t, "b-1", targeted, 10)
		c, err := domain.GrantCoupon("c-1", "u-1", "job-1", b, inside)
		wantErr(t, err, nil)
		wantNames(t, c.Changes(), domain.EvCouponGranted)
		e := c.Changes()[0].(*domain.CouponGranted)
		if e.CouponID != "c-1" || e.UserID != "u-1" || e.JobID != "job-1" || !e.At.Equal(inside) ||
			!termsEqual(e.Terms, targeted.TermsAt("b-1", 0, inside)) {
			t.Fatalf("CouponGranted = %+v", e)
		}
		if !c.Exists() || c.Source != "granted" || c.Status != domain.CouponUsable || c.UserID != "u-1" || !c.ObtainedAt.Equal(inside) {
			t.Fatalf("state %+v", c)
		}
		if c.BaseVersion() != -1 || c.Version() != 0 {
			t.Fatalf("Version, BaseVersion = %d, %d", c.Version(), c.BaseVersion())
		}
	})

	shortWindow := windowRules()
	shortWindow.Audience = domain.AudienceTargeted
	shortWindow.ValidFrom, shortWindow.ValidUntil = claimStart, claimStart.Add(2*day)
	cases := []struct {
		name     string
		couponID string
		userID   string
		rules    domain.Rules
		prep     func(*domain.Batch) error
		now      time.Time
		kind     error
	}{
		{"public batch", "c-1", "u-1", baseRules(), nil, inside, nil},
		{"paused batch", "c-1", "u-1", targeted, func(b *domain.Batch) error { return b.Pause("a", t0) }, inside, nil},
		{"ended batch", "c-1", "u-1", targeted, nil, claimEnd, domain.ErrConflict},
		{"stopped batch", "c-1", "u-1", targeted, func(b *domain.Batch) error { return b.Stop("a", t0) }, inside, domain.ErrConflict},
		{"empty user id", "c-1", "", targeted, nil, inside, domain.ErrInvalidArgument},
		{"empty coupon id", "", "u-1", targeted, nil, inside, domain.ErrInvalidArgument},
		{"validity window already over", "c-1", "u-1", shortWindow, nil, shortWindow.ValidUntil, domain.ErrConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := issued(t, "b-1", tc.rules, 10)
			if tc.prep != nil {
				wantErr(t, tc.prep(b), nil)
			}
			c, err := domain.GrantCoupon(tc.couponID, tc.userID, "job-1", b, tc.now)
			wantErr(t, err, tc.kind)
			if (c == nil) != (tc.kind != nil) {
				t.Fatalf("coupon %v with error %v", c, err)
			}
		})
	}
	t.Run("missing batch", func(t *testing.T) {
		_, err := domain.GrantCoupon("c-1", "u-1", "job-1", domain.NewBatchFromHistory("b-x", nil), inside)
		wantErr(t, err, domain.ErrNotFound)
	})
}

// A coupon rebuilt from its stored events equals the one that recorded them.
func TestNewCouponFromHistoryRebuildsState(t *testing.T) {
	b := issued(t, "b-1", windowRules(), 10)
	c, err := domain.ClaimCoupon("c-1", "u-1", "idem-1", b, claimStart)
	wantErr(t, err, nil)
	wantErr(t, c.Lock("o-A", "u-1", hold, lockAt), nil)
	c.ReleaseExpiredHold(lockAt.Add(hold))
	wantErr(t, c.Lock("o-B", "u-1", hold, lockAt.Add(day)), nil)
	wantErr(t, c.Redeem("o-B", "pay-B", 5000, lockAt.Add(day)), nil)
	if c.Version() != 4 || c.BaseVersion() != -1 {
		t.Fatalf("Version, BaseVersion = %d, %d; want 4, -1", c.Version(), c.BaseVersion())
	}

	reg := domain.NewRegistry()
	var history []domain.Event
	for _, e := range c.Changes() {
		name, data, err := reg.Marshal(e)
		wantErr(t, err, nil)
		back, err := reg.Unmarshal(name, data)
		wantErr(t, err, nil)
		history = append(history, back)
	}
	r := domain.NewCouponFromHistory("c-1", history)
	if !reflect.DeepEqual(couponSnapshot(r), couponSnapshot(c)) {
		t.Fatalf("rebuilt %+v\nwant    %+v", couponSnapshot(r), couponSnapshot(c))
	}
	if r.Version() != 4 || r.BaseVersion() != 4 || len(r.Changes()) != 0 {
		t.Fatalf("rebuilt: Version %d, BaseVersion %d, %d changes", r.Version(), r.BaseVersion(), len(r.Changes()))
	}
	// Release history survives the rebuild: the first order's cancel is a no-op.
	wantErr(t, r.Unlock("o-A", lockAt.Add(day)), nil)
	wantErr(t, r.Return("o-B", lockAt.Add(2*day)), nil)
	if r.BaseVersion() != 4 || r.Version() != 5 {
		t.Fatalf("after a change: Version %d, BaseVersion %d; want 5, 4", r.Version(), r.BaseVersion())
	}
}

type couponState struct {
	ID, UserID, Source, IdempotencyKey, OrderID, PaymentID string
	Terms                                                  domain.CouponTerms
	Status                                                 domain.CouponStatus
	ObtainedAt, HoldUntil                                  time.Time
	Exists                                                 bool
	Version                                                int64
}

func couponSnapshot(c *domain.Coupon) couponState {
	terms := c.Terms
	terms.ValidFrom, terms.ValidUntil = terms.ValidFrom.UTC(), terms.ValidUntil.UTC()
	return couponState{c.ID, c.UserID, c.Source, c.IdempotencyKey, c.OrderID, c.PaymentID, terms, c.Status,
		c.ObtainedAt.UTC(), c.HoldUntil.UTC(), c.Exists(), c.Version()}
}
