package httpapi

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the service's Prometheus metrics. They are registered on the
// registry given to NewMetrics (never the global default registry), and
// /metrics serves that registry.
type Metrics struct {
	claims      *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	appendBatch prometheus.Histogram
	gatherer    prometheus.Gatherer
}

// Claim outcomes besides the error codes.
const (
	ClaimCreated  = "created"
	ClaimReplayed = "replayed"
)

// NewMetrics registers the metrics on reg (pass a fresh
// prometheus.NewRegistry(), never the global default registry). It panics
// if they are already registered there, like prometheus.MustRegister.
// /metrics serves Deps.Registry, or reg itself when it is also a Gatherer.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		panic("httpapi: NewMetrics needs a registry")
	}
	m := &Metrics{
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "couponsd_claims_total",
			Help: "Coupon claims by outcome: created, replayed, or the error code (sold_out, already_claimed, not_claimable, ...).",
		}, []string{"code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "couponsd_http_request_duration_seconds",
			Help:    "HTTP request duration by route template, method and status.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "status"}),
		appendBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "couponsd_eventstore_append_batch_size",
			Help:    "Number of appends committed together by the event store.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 .. 1024
		}),
	}
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.gatherer = g
	}
	reg.MustRegister(m.claims, m.duration, m.appendBatch)
	return m
}

// ObserveAppendBatch records the size of one event store commit batch (wire
// it to the store's commit hook). Safe on a nil *Metrics.
func (m *Metrics) ObserveAppendBatch(n int) {
	if m != nil {
		m.appendBatch.Observe(float64(n))
	}
}

// handler serves g in the Prometheus exposition format.
func metricsHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

func (m *Metrics) claim(code string) { m.claims.WithLabelValues(code).Inc() }
