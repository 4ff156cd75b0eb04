package httpapi

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/pricing"
	"github.com/couponsd/couponsd/readapi"
)

// whatIfRequest is the body of POST /v1/pricing/best.
type whatIfRequest struct {
	Cart    *pricing.Cart    `json:"cart"`
	Coupons []pricing.Coupon `json:"coupons"`
	At      string           `json:"at"`
}

func (s *Server) checkoutRoutes() {
	s.Handle(http.MethodPost, "/v1/checkout/quote", s.checkoutQuote, user)
	s.Handle(http.MethodPost, "/v1/pricing/best", s.pricingBest, []string{RoleAdmin, RoleService})
	s.Handle(http.MethodGet, "/v1/products/:product_id/coupons", s.productCoupons, user)
}

func (s *Server) checkout() (*readapi.Checkout, error) {
	if s.q == nil || s.q.Checkout == nil {
		return nil, domain.Errorf(domain.ErrUnavailable, "the read side is not configured")
	}
	return s.q.Checkout, nil
}

func (s *Server) checkoutQuote(c echo.Context) error {
	ck, err := s.checkout()
	if err != nil {
		return err
	}
	var cart pricing.Cart
	if err := DecodeJSON(c, &cart, true); err != nil {
		return err
	}
	minPos, err := queryInt(c, "min_position")
	if err != nil {
		return err
	}
	if minPos > 0 {
		// Read your writes (Queries.Coupons tracks the projections; a
		// server wired with a Checkout but no Coupons cannot wait).
		if s.q.Coupons == nil {
			return domain.Errorf(domain.ErrUnavailable, "the read side is not configured")
		}
		if err := s.q.Coupons.WaitFor(c.Request().Context(), uint64(minPos), "view"); err != nil {
			return err
		}
	}
	q, err := ck.Quote(c.Request().Context(), caller(c), cart)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, q)
}

func (s *Server) pricingBest(c echo.Context) error {
	ck, err := s.checkout()
	if err != nil {
		return err
	}
	var req whatIfRequest
	if err := DecodeJSON(c, &req, true); err != nil {
		return err
	}
	if req.Cart == nil {
		return domain.Invalid("cart", "is required")
	}
	var at time.Time
	if req.At != "" {
		if at, err = timeField("at", req.At); err != nil {
			return err
		}
	}
	q, err := ck.WhatIf(*req.Cart, req.Coupons, at)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, q)
}

func (s *Server) productCoupons(c echo.Context) error {
	ck, err := s.checkout()
	if err != nil {
		return err
	}
	bs, err := ck.ProductCoupons(c.Request().Context(), caller(c), c.Param("product_id"), c.QueryParam("merchant_id"), c.QueryParam("category_id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"product_id": c.Param("product_id"), "batches": bs})
}
