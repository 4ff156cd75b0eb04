package esdbstore

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/eventstore/conformance"
	"github.com/couponsd/couponsd/infra/eventstore/esdbtest"
)

// realServerEnv names the connection string of a real EventStoreDB for the
// conformance suite, e.g. esdb://localhost:2113?tls=false.
const realServerEnv = "COUPONS_TEST_EVENTSTORE_URL"

// fastDiscovery makes the client give up a failed (re)connection quickly.
const fastDiscovery = "&maxDiscoverAttempts=2&discoveryInterval=20&gossipTimeout=1"

// namespace returns a namespace of its own for one store, so stores that
// share a server (the suite runs in parallel) start empty.
func namespace() string { return "t" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12] + "-" }

// conformanceOpener opens stores on url, each in its own namespace, seeing
// every stream of it: the conformance suite uses arbitrary stream names.
func conformanceOpener(url string) func(t *testing.T) es.Store {
	return func(t *testing.T) es.Store {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		s, err := Open(ctx, url, Options{Namespace: namespace(), StreamPrefixes: []string{""}})
		if err != nil {
			t.Fatalf("Open(%s): %v", url, err)
		}
		return s
	}
}

// TestConformance runs the port's suite against the in-process server.
func TestConformance(t *testing.T) {
	srv := esdbtest.Start(t)
	conformance.Run(t, conformanceOpener(srv.URL()))
}

// TestConformanceRealServer runs the same suite, through the same code,
// against the EventStoreDB named by COUPONS_TEST_EVENTSTORE_URL.
func TestConformanceRealServer(t *testing.T) {
	url := os.Getenv(realServerEnv)
	if url == "" {
		t.Skip(realServerEnv + " is not set")
	}
	conformance.Run(t, conformanceOpener(url))
}
