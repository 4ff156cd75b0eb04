package commands

import (
	"time"
)

// Handlers bundles every command handler, built from one set of dependencies.
type Handlers struct {
	IssueBatch  *IssueBatchHandler
	ChangeRules *ChangeBatchRulesHandler
	Activity    *ChangeBatchActivityHandler
	AddStock    *AddStockHandler
	Claim       *ClaimCouponHandler
	Lock        *LockCouponHandler
	Redeem      *RedeemCouponHandler
	Unlock      *UnlockCouponHandler
	Return      *ReturnCouponHandler
	Expire      *ExpireCouponHandler
	ReleaseHold *ReleaseExpiredHoldHandler
	Reconcile   *ReconcileReservationsHandler
	Grants      *GrantJobs // set by the composition root (NewGrantJobs); nil: no grant jobs
}

// NewHandlers builds every handler; hold is the order hold timeout.
func NewHandlers(d Deps, hold time.Duration) (*Handlers, error) {
	if err := d.validate("Handlers"); err != nil {
		return nil, err
	}
	var (
		h   Handlers
		err error
	)
	must := func(e error) {
		if err == nil {
			err = e
		}
	}
	var e error
	h.IssueBatch, e = NewIssueBatchHandler(d)
	must(e)
	h.ChangeRules, e = NewChangeBatchRulesHandler(d)
	must(e)
	h.Activity, e = NewChangeBatchActivityHandler(d)
	must(e)
	h.AddStock, e = NewAddStockHandler(d)
	must(e)
	h.Claim, e = NewClaimCouponHandler(d, NewBatchCache(d.Repo))
	must(e)
	h.Lock, e = NewLockCouponHandler(d.Repo, d.Clock, hold)
	must(e)
	h.Redeem, e = NewRedeemCouponHandler(d.Repo, d.Clock)
	must(e)
	h.Unlock, e = NewUnlockCouponHandler(d.Repo, d.Clock)
	must(e)
	h.Return, e = NewReturnCouponHandler(d.Repo, d.Clock)
	must(e)
	h.Expire, e = NewExpireCouponHandler(d.Repo, d.Clock)
	must(e)
	h.ReleaseHold, e = NewReleaseExpiredHoldHandler(d.Repo, d.Clock)
	must(e)
	h.Reconcile, e = NewReconcileReservationsHandler(d)
	must(e)
	if err != nil {
		return nil, err
	}
	return &h, nil
}
