package esindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/history/esfake"
	"github.com/couponsd/couponsd/infra/history/historytest"
	"github.com/couponsd/couponsd/projections"
)

// EnvURL names a real cluster to run the suite against as well.
const EnvURL = "COUPONS_TEST_ELASTICSEARCH_URL"

func newClient(t testing.TB, url string, retries int) *elasticsearch.Client {
	t.Helper()
	c, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{url}, MaxRetries: retries, DisableRetry: retries == 0})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var prefixSeq atomic.Int64

// runID keeps prefixes unique across runs against a shared cluster.
var runID = fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffffff)

func uniquePrefix() string {
	return fmt.Sprintf("couponsd-test-%s-%d-", runID, prefixSeq.Add(1))
}

func newIndex(t testing.TB, c *elasticsearch.Client, opts Options) *Index {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ix, err := New(ctx, c, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return ix
}

func TestConformanceFake(t *testing.T) {
	srv := esfake.NewServer()
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, 0)
	historytest.Run(t, func(t *testing.T) projections.HistoryIndex {
		prefix := uniquePrefix()
		ix := newIndex(t, c, Options{Prefix: prefix})
		t.Cleanup(func() {
			for _, name := range srv.Handler.Indices() {
				if strings.HasPrefix(name, prefix) {
					deleteIndex(t, c, name)
				}
			}
		})
		return ix
	})
	if left := srv.Handler.Indices(); len(left) != 0 {
		t.Errorf("indices left behind: %v", left)
	}
}

// TestConformanceCluster runs the suite against the cluster named by
// COUPONS_TEST_ELASTICSEARCH_URL, with a unique index prefix per subtest,
// and deletes its indices afterwards.
func TestConformanceCluster(t *testing.T) {
	url := os.Getenv(EnvURL)
	if url == "" {
		t.Skip(EnvURL + " not set")
	}
	c := newClient(t, url, 3)
	historytest.Run(t, func(t *testing.T) projections.HistoryIndex {
		prefix := uniquePrefix()
		t.Cleanup(func() { deletePrefix(t, c, prefix) })
		return newIndex(t, c, Options{Prefix: prefix, Refresh: RefreshTrue})
	})
}

func deleteIndex(t testing.TB, c *elasticsearch.Client, name string) {
	t.Helper()
	res, err := c.Indices.Delete([]string{name})
	if err != nil {
		t.Errorf("delete %s: %v", name, err)
		return
	}
	defer res.Body.Close()
	if res.StatusCode != 200 && res.StatusCode != 404 {
		b, _ := io.ReadAll(res.Body)
		t.Errorf("delete %s: %d %s", name, res.StatusCode, b)
	}
}

// deletePrefix deletes the indices named prefix* of a real cluster (by
// name: clusters refuse wildcard deletes by default).
func deletePrefix(t testing.TB, c *elasticsearch.Client, prefix string) {
	t.Helper()
	res, err := c.Cat.Indices(c.Cat.Indices.WithIndex(prefix+"*"), c.Cat.Indices.WithFormat("json"), c.Cat.Indices.WithH("index"))
	if err != nil {
		t.Errorf("list %s*: %v", prefix, err)
		return
	}
	defer res.Body.Close()
	var rows []struct {
		Index string `json:"index"`
	}
	if err := json.NewDecoder(res.Body).Decode(&rows); err != nil {
		t.Errorf("list %s*: %v", prefix, err)
		return
	}
	for _, r := range rows {
		if strings.HasPrefix(r.Index, prefix) {
			deleteIndex(t, c, r.Index)
		}
	}
}

func rec(id string, v uint64) projections.CouponRecord {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 1, time.UTC)
	return projections.CouponRecord{
		CouponID: id, BatchID: "b-1", UserID: "u-1", Status: "redeemed", Source: "claimed", Kind: "amount_off",
		Issuer: "shop", Discount: 100, ObtainedAt: t0, ValidFrom: t0, ValidUntil: t0.Add(time.Hour),
		RedeemedAt: t0.Add(time.Minute), EndedAt: t0.Add(time.Minute), UpdatedAt: t0.Add(time.Minute), Version: v,
	}
}

func getJSON(t *testing.T, c *elasticsearch.Client, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, path, nil)
	res, err := c.Perform(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if out != nil && res.StatusCode == 200 {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return res.StatusCode
}

func TestIndicesAliasAndMapping(t *testing.T) {
	srv := esfake.NewServer()
	defer srv.Close()
	c := newClient(t, srv.URL, 0)
	ctx := context.Background()
	ix := newIndex(t, c, Options{Prefix: "app-"})
	if got := srv.Handler.Indices(); !slices.Equal(got, []string{"app-history-meta", "app-history-v1"}) {
		t.Fatalf("indices after New = %v", got)
	}
	// New again on the same cluster reuses everything.
	ix = newIndex(t, c, Options{Prefix: "app-"})
	if got := srv.Handler.Indices(); len(got) != 2 {
		t.Fatalf("indices after a second New = %v", got)
	}

	var info map[string]struct {
		Aliases  map[string]any `json:"aliases"`
		Mappings struct {
			Dynamic    string                    `json:"dynamic"`
			Properties map[string]map[string]any `json:"properties"`
		} `json:"mappings"`
		Settings struct {
			Index struct {
				Shards string `json:"number_of_shards"`
			} `json:"index"`
		} `json:"settings"`
	}
	getJSON(t, c, "/app-history", &info)
	v1, ok := info["app-history-v1"]
	if !ok || len(info) != 1 {
		t.Fatalf("alias resolves to %v", info)
	}
	props := v1.Mappings.Properties
	want := map[string]string{
		"coupon_id": "keyword", "batch_id": "keyword", "user_id": "keyword", "status": "keyword", "kind": "keyword", "issuer": "keyword",
		"discount": "long", "amount_off": "long", "threshold": "long", "max_discount": "long", "version": "long",
		"ended_at": "date_nanos", "redeemed_at": "date_nanos", "obtained_at": "date_nanos",
	}
	for f, typ := range want {
		if props[f]["type"] != typ {
			t.Errorf("mapping of %s = %v, want %s", f, props[f], typ)
		}
	}
	if v1.Mappings.Dynamic != "strict" || v1.Settings.Index.Shards != "1" {
		t.Errorf("dynamic %q, shards %q", v1.Mappings.Dynamic, v1.Settings.Index.Shards)
	}

	if err := ix.Upsert(ctx, []projections.CouponRecord{rec("c-1", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := ix.SaveCheckpoint(ctx, 5); err != nil {
		t.Fatal(err)
	}
	rb, err := ix.Rebuild(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rb.(*Rebuild).Name() != "app-history-v2" {
		t.Fatalf("rebuild index = %s", rb.(*Rebuild).Name())
	}
	if err := rb.SaveCheckpoint(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if err := rb.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := srv.Handler.Indices(); !slices.Equal(got, []string{"app-history-meta", "app-history-v2"}) {
		t.Fatalf("indices after commit = %v", got)
	}
	if status := getJSON(t, c, "/app-history-meta/_doc/app-history-v1", nil); status != 404 {
		t.Fatalf("meta document of the dropped generation: status %d", status)
	}
	// A leftover index with the next name is skipped.
	req, _ := http.NewRequest(http.MethodPut, "/app-history-v3", nil)
	res, err := c.Perform(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("create leftover: %v %v", res, err)
	}
	res.Body.Close()
	rb, err = ix.Rebuild(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rb.(*Rebuild).Name() != "app-history-v4" {
		t.Fatalf("rebuild index = %s, want v4 past the leftover v3", rb.(*Rebuild).Name())
	}
	if err := rb.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if got := srv.Handler.Indices(); !slices.Equal(got, []string{"app-history-meta", "app-history-v2", "app-history-v3"}) {
		t.Fatalf("indices after abort = %v", got)
	}
}

func TestConcurrentCommitsConflict(t *testing.T) {
	srv := esfake.NewServer()
	defer srv.Close()
	c := newClient(t, srv.URL, 0)
	ctx := context.Background()
	ix := newIndex(t, c, Options{})
	rb1, _ := ix.Rebuild(ctx)
	rb2, _ := ix.Rebuild(ctx)
	if err := rb1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// rb2 reads the new current (rb1's) and replaces it: last commit wins.
	if err := rb2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := srv.Handler.Indices(); !slices.Equal(got, []string{"history-meta", "history-v3"}) {
		t.Fatalf("indices = %v", got)
	}
}

func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	srv := esfake.NewServer()
	c := newClient(t, srv.URL, 0)
	ix := newIndex(t, c, Options{})
	srv.Close() // connection refused from now on
	checks := map[string]error{}
	checks["Upsert"] = ix.Upsert(ctx, []projections.CouponRecord{rec("c-1", 1)})
	_, checks["Get"] = ix.Get(ctx, []string{"c-1"})
	_, checks["ListByUser"] = ix.ListByUser(ctx, "u-1", nil, "", 10)
	_, checks["TopUsers"] = ix.TopUsers(ctx, projections.TimeRange{}, 10)
	_, checks["Checkpoint"] = ix.Checkpoint(ctx)
	_, checks["Rebuild"] = ix.Rebuild(ctx)
	for name, err := range checks {
		if !errors.Is(err, domain.ErrUnavailable) {
			t.Errorf("%s against a stopped server: %v, want domain.ErrUnavailable", name, err)
		}
	}

	// 503s and 429s are unavailable too; a 400 is not.
	for _, status := range []int{503, 429, 400} {
		bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Elastic-Product", "Elasticsearch")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error":{"type":"x","reason":"injected"},"status":%d}`, status)
		}))
		ix := &Index{tr: newClient(t, bad.URL, 0), opts: Options{}.withDefaults(), alias: "history", meta: "history-meta", genPrefix: "history-v"}
		_, err := ix.Get(ctx, []string{"c-1"})
		if got := errors.Is(err, domain.ErrUnavailable); got != (status != 400) || err == nil {
			t.Errorf("status %d: err %v", status, err)
		}
		bad.Close()
	}
}

func TestBulkItemErrors(t *testing.T) {
	srv := esfake.NewServer()
	defer srv.Close()
	c := newClient(t, srv.URL, 0)
	ctx := context.Background()
	ix := newIndex(t, c, Options{MaxBulkItems: 2})
	// Several requests (MaxBulkItems 2), version conflicts skipped.
	recs := []projections.CouponRecord{rec("c-1", 3), rec("c-2", 1), rec("c-1", 2), rec("c-3", 1), rec("c-1", 4)}
	if err := ix.Upsert(ctx, recs); err != nil {
		t.Fatal(err)
	}
	m, err := ix.Get(ctx, []string{"c-1", "c-2", "c-3"})
	if err != nil || len(m) != 3 || m["c-1"].Version != 4 {
		t.Fatalf("Get = %v, %v", m, err)
	}
	// Other item errors fail the call: break the mapping's contract by
	// writing through an alias that does not exist.
	bad := &Index{tr: c, opts: ix.opts, alias: "nope", meta: ix.meta, genPrefix: ix.genPrefix}
	err = bad.Upsert(ctx, []projections.CouponRecord{rec("c-9", 1)})
	if err == nil || !strings.Contains(err.Error(), "index_not_found_exception") || !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("Upsert through a missing alias: %v", err)
	}
	if got := srv.Handler.Indices(); len(got) != 2 {
		t.Fatalf("a write through a missing alias created an index: %v", got)
	}
	// Times outside date_nanos are invalid arguments.
	r := rec("c-old", 1)
	r.ValidFrom = time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)
	if err := ix.Upsert(ctx, []projections.CouponRecord{r}); !errors.Is(err, domain.ErrInvalidArgument) {
		t.Fatalf("pre-1970 time: %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{Prefix: "Upper"}, {Prefix: "_x"}, {Prefix: "a b"}, {Refresh: "sometimes"}, {Replicas: -1}, {MaxBulkItems: -1}} {
		if err := o.Validate(); !errors.Is(err, domain.ErrInvalidArgument) {
			t.Errorf("Validate(%+v) = %v", o, err)
		}
	}
	if err := (Options{Prefix: "couponsd.prod-1_"}).Validate(); err != nil {
		t.Errorf("valid prefix: %v", err)
	}
}
