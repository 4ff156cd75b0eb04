package httpapi

import (
	_ "embed"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/readapi"
)

//go:embed openapi.yaml
var openapiYAML []byte

// OpenAPI returns the embedded OpenAPI document served at /openapi.yaml.
func OpenAPI() []byte { return append([]byte(nil), openapiYAML...) }

var (
	admin   = []string{RoleAdmin}
	user    = []string{RoleUser}
	service = []string{RoleService}
)

// routes registers the routes of this package.
func (s *Server) routes() {
	get, post := http.MethodGet, http.MethodPost

	// Operations (no token).
	s.Handle(get, "/healthz", s.healthz, nil)
	s.Handle(get, "/metrics", echo.WrapHandler(metricsHandler(s.gatherer)), nil)
	s.Handle(get, "/openapi.yaml", s.openapi, nil)

	// Back office.
	s.Handle(post, "/v1/batches", s.issueBatch, admin)
	s.Handle(get, "/v1/batches/:id", s.getBatch, admin)
	s.Handle(http.MethodPatch, "/v1/batches/:id", s.changeRules, admin)
	s.Handle(post, "/v1/batches/:id/pause", s.activity(commands.ActionPause), admin)
	s.Handle(post, "/v1/batches/:id/resume", s.activity(commands.ActionResume), admin)
	s.Handle(post, "/v1/batches/:id/stop", s.activity(commands.ActionStop), admin)
	s.Handle(post, "/v1/batches/:id/stock", s.addStock, admin)
	s.Handle(get, "/v1/coupons/:id/events", s.couponEvents, admin)

	// Shoppers. The claim skips the generic idempotency middleware: the
	// stock guard handles the Idempotency-Key atomically and durably.
	s.e.POST("/v1/batches/:id/claim", s.claim, s.mw.Auth, s.mw.Require(user...), s.limitClaims)

	// Order system.
	s.Handle(post, "/v1/coupons/:id/lock", s.lock, service)
	s.Handle(post, "/v1/coupons/:id/redeem", s.redeem, service)
	s.Handle(post, "/v1/coupons/:id/unlock", s.unlock, service)
	s.Handle(post, "/v1/coupons/:id/return", s.returnCoupon, service)
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) openapi(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", openapiYAML)
}

func caller(c echo.Context) string {
	p, _ := PrincipalOf(c)
	return p.Subject
}

// batchIDNamespace is the UUID v5 namespace of batch ids derived from
// (caller, Idempotency-Key).
var batchIDNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:couponsd:batch-id"))

// BatchIDFor is the batch id of a POST /v1/batches by sub with an
// Idempotency-Key: a retry issues the same id, which the command treats as
// a replay.
func BatchIDFor(sub, idempotencyKey string) string {
	return uuid.NewSHA1(batchIDNamespace, []byte(sub+"\x00"+idempotencyKey)).String()
}

func (s *Server) issueBatch(c echo.Context) error {
	var req batchRules
	if err := DecodeJSON(c, &req, true); err != nil {
		return err
	}
	rules, err := req.rules()
	if err != nil {
		return err
	}
	key, err := idempotencyKeyOf(c)
	if err != nil {
		return err
	}
	sub := caller(c)
	id := s.newID()
	if key != "" {
		id = BatchIDFor(sub, key)
	}
	ctx := c.Request().Context()
	res, err := s.cmd.IssueBatch.Handle(ctx, commands.IssueBatch{BatchID: id, Rules: rules, TotalStock: stockOf(req), By: sub})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, s.batchView(c, res.Aggregate))
}

func stockOf(r batchRules) int64 {
	if r.TotalStock == nil {
		return 0
	}
	return *r.TotalStock
}

// batchView is the batch with live counts; should that read fail after a
// successful change, the aggregate itself is shown.
func (s *Server) batchView(c echo.Context, b *domain.Batch) BatchView {
	ctx := c.Request().Context()
	v, err := s.batches.Get(ctx, b.ID)
	if err != nil {
		s.log.WarnContext(ctx, "reading the batch view after a change failed", "batch_id", b.ID, "err", err)
		return readapi.View(b, s.clock.Now())
	}
	return v
}

func (s *Server) getBatch(c echo.Context) error {
	v, err := s.batches.Get(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) changeRules(c echo.Context) error {
	var req batchRules
	if err := DecodeJSON(c, &req, true); err != nil {
		return err
	}
	if req.TotalStock != nil {
		return domain.Invalid("total_stock", "cannot be changed with the rules; use POST /v1/batches/{id}/stock")
	}
	rules, err := req.rules()
	if err != nil {
		return err
	}
	res, err := s.cmd.ChangeRules.Handle(c.Request().Context(), commands.ChangeBatchRules{BatchID: c.Param("id"), Rules: rules, By: caller(c)})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.batchView(c, res.Aggregate))
}

func (s *Server) activity(action string) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := noBody(c); err != nil {
			return err
		}
		res, err := s.cmd.Activity.Handle(c.Request().Context(), commands.ChangeBatchActivity{BatchID: c.Param("id"), Action: action, By: caller(c)})
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, s.batchView(c, res.Aggregate))
	}
}

func (s *Server) addStock(c echo.Context) error {
	var req addStockRequest
	if err := DecodeJSON(c, &req, true); err != nil {
		return err
	}
	key, err := idempotencyKeyOf(c)
	if err != nil {
		return err
	}
	res, err := s.cmd.AddStock.Handle(c.Request().Context(), commands.AddStock{BatchID: c.Param("id"), Add: req.Add, IdempotencyKey: key, By: caller(c)})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.batchView(c, res.Aggregate))
}

// claim is the hot path of a flash sale: no body, one guard round trip,
// one append.
func (s *Server) claim(c echo.Context) error {
	err := s.doClaim(c)
	if err != nil {
		_, code := statusOf(err)
		s.metrics.claim(code)
	}
	return err
}

func (s *Server) doClaim(c echo.Context) error {
	key, err := idempotencyKeyOf(c)
	if err != nil {
		return err
	}
	if c.Request().ContentLength != 0 {
		if err := noBody(c); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	res, err := s.cmd.Claim.Handle(ctx, commands.ClaimCoupon{BatchID: c.Param("id"), UserID: caller(c), IdempotencyKey: key, CouponID: s.newID()})
	if err != nil {
		return err
	}
	v := couponView(res.Aggregate)
	if res.Changed {
		v.Position = res.Position
		s.metrics.claim(ClaimCreated)
	} else {
		// A replay: answer as the first time, with the claim event's position.
		recs, err := s.repo.Store().ReadStream(ctx, commands.CouponStream(v.ID), 0)
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			v.Position = recs[0].Position
		}
		c.Response().Header().Set(HeaderIdempotentReplayed, "true")
		s.metrics.claim(ClaimReplayed)
	}
	return c.JSON(http.StatusCreated, v)
}

// couponResult renders a coupon command's result.
func couponResult(c echo.Context, res commands.Result[*domain.Coupon], err error) error {
	if err != nil {
		return err
	}
	v := couponView(res.Aggregate)
	if res.Changed {
		v.Position = res.Position
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) lock(c echo.Context) error {
	var req lockRequest
	if err := DecodeJSON(c, &req, true); err != nil {
		return err
	}
	res, err := s.cmd.Lock.Handle(c.Request().Context(), commands.LockCoupon{CouponID: c.Param("id"), OrderID: req.OrderID, UserID: req.UserID})
	return couponResult(c, res, err)
}

func (s *Server) redeem(c echo.Context) error {
	var req redeemRequest
	if err := DecodeJSON(c, &req, true); err != nil {
		return err
	}
	res, err := s.cmd.Redeem.Handle(c.Request().Context(), commands.RedeemCoupon{CouponID: c.Param("id"), OrderID: req.OrderID, PaymentID: req.PaymentID, Discount: req.Discount})
	return couponResult(c, res, err)
}

func (s *Server) unlock(c echo.Context) error {
	var req orderRequest
	if err := DecodeJSON(c, &req, true); err != nil {
		return err
	}
	res, err := s.cmd.Unlock.Handle(c.Request().Context(), commands.UnlockCoupon{CouponID: c.Param("id"), OrderID: req.OrderID})
	return couponResult(c, res, err)
}

func (s *Server) returnCoupon(c echo.Context) error {
	var req orderRequest
	if err := DecodeJSON(c, &req, true); err != nil {
		return err
	}
	res, err := s.cmd.Return.Handle(c.Request().Context(), commands.ReturnCoupon{CouponID: c.Param("id"), OrderID: req.OrderID})
	return couponResult(c, res, err)
}

func (s *Server) couponEvents(c echo.Context) error {
	id := c.Param("id")
	evs, err := readapi.CouponEvents(c.Request().Context(), s.repo, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, CouponEventsView{CouponID: id, Events: evs})
}
