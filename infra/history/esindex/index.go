// Package esindex is the Elasticsearch history index
// (projections.HistoryIndex), over the plain REST API (esapi.Transport,
// normally an *elasticsearch.Client of go-elasticsearch v8).
//
// # Indices
//
//	<prefix>history        alias; every read and live write goes through it
//	<prefix>history-v<N>   generation N: explicit strict mapping (see
//	                       recordMapping), one primary shard, doc id = coupon id
//	<prefix>history-meta   one document per generation index, id = its name:
//	                       {"generation": name, "checkpoint": uint64}
//
// New creates the meta index and generation 1 behind the alias when they
// are missing.
//
// # Writes
//
// Upsert sends _bulk index actions with version_type=external and version =
// Version+1, so Elasticsearch itself keeps the highest version per coupon:
// a stale item fails with a 409 version_conflict_engine_exception, which is
// a skip; any other item error fails the call (after the other items were
// applied). Live writes target the alias with require_alias=true, so a
// missing alias fails instead of auto-creating an index of that name.
// Refresh follows Options.Refresh (wait_for by default): when Upsert
// returns, ListByUser and the reports see its writes. Get is a realtime
// _mget and never needs a refresh.
//
// # Reads
//
// ListByUser is a _search with a bool filter (user, statuses), sort
// [ended_at desc (missing last), coupon_id desc] and search_after built
// from the cursor's (EndedAt, CouponID); a zero EndedAt is the
// Long.MIN_VALUE Elasticsearch uses for missing values sorted last in
// descending order. Reports are size-0 searches with filter, terms and sum
// aggregations; with one primary shard the terms aggregations are exact.
// TopBatches takes two searches (the ranking, then the claims and
// expirations of the ranked batches), not one snapshot. Sums of discounts
// are computed by Elasticsearch as doubles: exact up to 2^53.
//
// # Rebuilds
//
// Rebuild creates <prefix>history-v<N+1> (N of the current generation,
// skipping names already taken) and writes to it by name; the checkpoint of
// a rebuild is its own meta document. Commit posts one _aliases request
// that removes the alias from the current index (must_exist), adds it to
// the new one and deletes the old index (remove_index): the switch and the
// drop are one atomic cluster-state update, and a concurrent commit makes
// it fail (domain.ErrConflict) instead of losing an index. It then deletes
// the old generation's meta document. Abort deletes the new index and its
// meta document. An index of a rebuild whose process died stays until
// deleted by hand; later rebuilds skip its name.
//
// # Errors
//
// Transport failures, HTTP 408/429/5xx, and a missing alias or index are
// domain.ErrUnavailable; a call whose context ended returns an error
// matching ctx.Err().
package esindex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/history/internal/histkit"
	"github.com/couponsd/couponsd/projections"
)

var (
	_ projections.HistoryIndex   = (*Index)(nil)
	_ projections.HistoryRebuild = (*Rebuild)(nil)
)

// ErrRebuildFinished is returned by calls on a rebuild that was committed
// or aborted. It matches domain.ErrConflict.
var ErrRebuildFinished = domain.Errorf(domain.ErrConflict, "esindex: rebuild already committed or aborted")

// Index is an Elasticsearch history index. It is safe for concurrent use.
type Index struct {
	tr        esapi.Transport
	opts      Options
	alias     string
	meta      string
	genPrefix string
}

// New connects to the indices named by opts.Prefix, creating the meta
// index and the first generation behind the alias if they do not exist.
// tr is normally an *elasticsearch.Client.
func New(ctx context.Context, tr esapi.Transport, opts Options) (*Index, error) {
	if tr == nil {
		return nil, domain.Invalid("transport", "required")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	ix := &Index{
		tr: tr, opts: opts,
		alias:     opts.Prefix + "history",
		meta:      opts.Prefix + "history-meta",
		genPrefix: opts.Prefix + "history-v",
	}
	if _, err := ix.createIndex(ctx, ix.meta, metaMapping(), false); err != nil {
		return nil, err
	}
	if _, err := ix.current(ctx); err == nil {
		return ix, nil
	} else if !errors.Is(err, errNoAlias) {
		return nil, err
	}
	if _, err := ix.createIndex(ctx, ix.genPrefix+"1", recordMapping(), true); err != nil {
		return nil, err
	}
	if _, err := ix.current(ctx); err != nil {
		return nil, fmt.Errorf("esindex: %s exists but alias %s does not point at it: %w", ix.genPrefix+"1", ix.alias, err)
	}
	return ix, nil
}

// Alias is the name of the alias reads go through.
func (ix *Index) Alias() string { return ix.alias }

// MetaIndex is the name of the meta index.
func (ix *Index) MetaIndex() string { return ix.meta }

// ---- transport ----

type call struct {
	method, path string
	query        url.Values
	body         []byte
	ndjson       bool
}

// do performs c and returns the status and body of the response; only
// transport failures are errors.
func (ix *Index) do(ctx context.Context, c call) (int, []byte, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, fmt.Errorf("esindex: %w", err)
	}
	u := &url.URL{Path: c.path, RawQuery: c.query.Encode()}
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, u.String(), body)
	if err != nil {
		return 0, nil, fmt.Errorf("esindex: %w", err)
	}
	if c.body != nil {
		if c.ndjson {
			req.Header.Set("Content-Type", "application/x-ndjson")
		} else {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	req.Header.Set("Accept", "application/json")
	res, err := ix.tr.Perform(req)
	if err != nil {
		return 0, nil, transportErr(ctx, c, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, transportErr(ctx, c, err)
	}
	return res.StatusCode, b, nil
}

func transportErr(ctx context.Context, c call, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("esindex: %s %s: %w", c.method, c.path, ctx.Err())
	}
	return fmt.Errorf("esindex: %s %s: %w: %w", c.method, c.path, domain.ErrUnavailable, err)
}

// esErr is the error part of an Elasticsearch error body.
type esErr struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
}

// parseError reads {"error": {...}, "status": n} or {"error": "text"}.
func parseError(body []byte) esErr {
	var v struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil || len(v.Error) == 0 {
		return esErr{Reason: strings.TrimSpace(string(body))}
	}
	var e esErr
	if json.Unmarshal(v.Error, &e) == nil {
		return e
	}
	var s string
	_ = json.Unmarshal(v.Error, &s)
	return esErr{Reason: s}
}

// statusErr maps a failed response: 408, 429, 5xx and missing indices are
// domain.ErrUnavailable.
func statusErr(c call, status int, body []byte) error {
	e := parseError(body)
	msg := fmt.Sprintf("esindex: %s %s: status %d: %s: %s", c.method, c.path, status, e.Type, e.Reason)
	if status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500 ||
		e.Type == "index_not_found_exception" {
		return fmt.Errorf("%w: %s", domain.ErrUnavailable, msg)
	}
	return errors.New(msg)
}

// json performs c, expecting one of the ok statuses, and decodes the
// response into out (when not nil).
func (ix *Index) json(ctx context.Context, c call, out any, ok ...int) (int, error) {
	status, body, err := ix.do(ctx, c)
	if err != nil {
		return 0, err
	}
	if len(ok) == 0 {
		ok = []int{http.StatusOK}
	}
	for _, s := range ok {
		if status == s {
			if out != nil && status/100 == 2 {
				if err := json.Unmarshal(body, out); err != nil {
					return status, fmt.Errorf("esindex: %s %s: decode response: %w", c.method, c.path, err)
				}
			}
			return status, nil
		}
	}
	return status, statusErr(c, status, body)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only built-in types
	}
	return b
}

// ---- indices ----

var errNoAlias = errors.New("alias missing")

// createIndex creates an index with mapping (and the alias if withAlias);
// existed tells that it was already there.
func (ix *Index) createIndex(ctx context.Context, name string, mapping map[string]any, withAlias bool) (existed bool, err error) {
	body := map[string]any{
		"settings": map[string]any{"index": map[string]any{"number_of_shards": 1, "number_of_replicas": ix.opts.Replicas}},
		"mappings": mapping,
	}
	if withAlias {
		body["aliases"] = map[string]any{ix.alias: map[string]any{}}
	}
	c := call{method: http.MethodPut, path: "/" + name, body: mustJSON(body)}
	status, b, err := ix.do(ctx, c)
	if err != nil {
		return false, err
	}
	switch {
	case status == http.StatusOK:
		return false, nil
	case status == http.StatusBadRequest && parseError(b).Type == "resource_already_exists_exception":
		return true, nil
	}
	return false, statusErr(c, status, b)
}

// current is the name of the index the alias points at.
func (ix *Index) current(ctx context.Context) (string, error) {
	c := call{method: http.MethodGet, path: "/_alias/" + ix.alias}
	status, b, err := ix.do(ctx, c)
	if err != nil {
		return "", err
	}
	if status == http.StatusNotFound {
		return "", fmt.Errorf("esindex: %w: %s: %w", domain.ErrUnavailable, ix.alias, errNoAlias)
	}
	if status != http.StatusOK {
		return "", statusErr(c, status, b)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("esindex: decode alias: %w", err)
	}
	if len(m) != 1 {
		return "", fmt.Errorf("esindex: alias %s points at %d indices, want 1", ix.alias, len(m))
	}
	for name := range m {
		return name, nil
	}
	panic("unreachable")
}

func (ix *Index) deleteDoc(ctx context.Context, index, id string) error {
	_, err := ix.json(ctx, call{method: http.MethodDelete, path: "/" + index + "/_doc/" + url.PathEscape(id)}, nil, http.StatusOK, http.StatusNotFound)
	return err
}

// ---- writes ----

// Upsert implements projections.HistoryIndex.
func (ix *Index) Upsert(ctx context.Context, recs []projections.CouponRecord) error {
	return ix.upsert(ctx, ix.alias, true, recs)
}

type bulkResponse struct {
	Errors bool `json:"errors"`
	Items  []map[string]struct {
		ID     string `json:"_id"`
		Status int    `json:"status"`
		Error  *esErr `json:"error"`
	} `json:"items"`
}

func (ix *Index) upsert(ctx context.Context, target string, viaAlias bool, recs []projections.CouponRecord) error {
	if err := histkit.CheckRecords(recs); err != nil {
		return err
	}
	if err := checkForES(recs); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	q := url.Values{"refresh": {ix.opts.Refresh}}
	if viaAlias {
		q.Set("require_alias", "true")
	}
	for len(recs) > 0 {
		n := min(len(recs), ix.opts.MaxBulkItems)
		var buf bytes.Buffer
		for i := range recs[:n] {
			r := &recs[i]
			fmt.Fprintf(&buf, `{"index":{"_id":%s,"version":%d,"version_type":"external"}}`+"\n", mustJSON(r.CouponID), r.Version+1)
			buf.Write(mustJSON(toDoc(r)))
			buf.WriteByte('\n')
		}
		c := call{method: http.MethodPost, path: "/" + target + "/_bulk", query: q, body: buf.Bytes(), ndjson: true}
		var res bulkResponse
		if _, err := ix.json(ctx, c, &res); err != nil {
			return err
		}
		if len(res.Items) != n {
			return fmt.Errorf("esindex: _bulk answered %d items for %d actions", len(res.Items), n)
		}
		if res.Errors {
			if err := bulkItemsErr(res); err != nil {
				return err
			}
		}
		recs = recs[n:]
	}
	return nil
}

// bulkItemsErr reports the failed items of a bulk response, ignoring
// version conflicts (stale records).
func bulkItemsErr(res bulkResponse) error {
	var first error
	failed := 0
	unavailable := false
	for _, item := range res.Items {
		for _, it := range item {
			if it.Error == nil || it.Status/100 == 2 {
				continue
			}
			if it.Status == http.StatusConflict && it.Error.Type == "version_conflict_engine_exception" {
				continue
			}
			failed++
			if it.Status == http.StatusTooManyRequests || it.Status >= 500 || it.Error.Type == "index_not_found_exception" {
				unavailable = true
			}
			if first == nil {
				first = fmt.Errorf("coupon %s: status %d: %s: %s", it.ID, it.Status, it.Error.Type, it.Error.Reason)
			}
		}
	}
	if failed == 0 {
		return nil
	}
	err := fmt.Errorf("esindex: %d of %d bulk items failed, first: %w", failed, len(res.Items), first)
	if unavailable {
		return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
	}
	return err
}

// SaveCheckpoint implements projections.HistoryIndex.
func (ix *Index) SaveCheckpoint(ctx context.Context, pos uint64) error {
	cur, err := ix.current(ctx)
	if err != nil {
		return err
	}
	return ix.saveCheckpoint(ctx, cur, pos)
}

func (ix *Index) saveCheckpoint(ctx context.Context, gen string, pos uint64) error {
	body := fmt.Appendf(nil, `{"generation":%s,"checkpoint":%d}`, mustJSON(gen), pos)
	c := call{method: http.MethodPut, path: "/" + ix.meta + "/_doc/" + url.PathEscape(gen), body: body}
	_, err := ix.json(ctx, c, nil, http.StatusOK, http.StatusCreated)
	return err
}

// ---- reads ----

// Checkpoint implements projections.HistoryIndex.
func (ix *Index) Checkpoint(ctx context.Context) (uint64, error) {
	cur, err := ix.current(ctx)
	if err != nil {
		return 0, err
	}
	c := call{method: http.MethodGet, path: "/" + ix.meta + "/_doc/" + url.PathEscape(cur)}
	status, b, err := ix.do(ctx, c)
	if err != nil {
		return 0, err
	}
	var res struct {
		Found  *bool `json:"found"`
		Source struct {
			Checkpoint uint64 `json:"checkpoint"`
		} `json:"_source"`
	}
	if (status == http.StatusOK || status == http.StatusNotFound) && json.Unmarshal(b, &res) == nil && res.Found != nil {
		if !*res.Found {
			return 0, nil
		}
		return res.Source.Checkpoint, nil
	}
	return 0, statusErr(c, status, b)
}

// Get implements projections.HistoryIndex.
func (ix *Index) Get(ctx context.Context, couponIDs []string) (map[string]projections.CouponRecord, error) {
	return ix.get(ctx, ix.alias, couponIDs)
}

func (ix *Index) get(ctx context.Context, target string, couponIDs []string) (map[string]projections.CouponRecord, error) {
	out := make(map[string]projections.CouponRecord, len(couponIDs))
	ids := make([]string, 0, len(couponIDs))
	seen := make(map[string]bool, len(couponIDs))
	for _, id := range couponIDs {
		if id != "" && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return out, nil
	}
	c := call{method: http.MethodPost, path: "/" + target + "/_mget", body: mustJSON(map[string]any{"ids": ids})}
	var res struct {
		Docs []struct {
			ID     string          `json:"_id"`
			Found  bool            `json:"found"`
			Source json.RawMessage `json:"_source"`
			Error  *esErr          `json:"error"`
		} `json:"docs"`
	}
	if _, err := ix.json(ctx, c, &res); err != nil {
		return nil, err
	}
	for _, d := range res.Docs {
		if d.Error != nil {
			return nil, fmt.Errorf("%w: esindex: _mget %s: %s: %s", domain.ErrUnavailable, d.ID, d.Error.Type, d.Error.Reason)
		}
		if !d.Found {
			continue
		}
		r, err := fromSource(d.Source)
		if err != nil {
			return nil, err
		}
		out[d.ID] = r
	}
	return out, nil
}

type hits struct {
	Hits struct {
		Hits []struct {
			Source json.RawMessage `json:"_source"`
		} `json:"hits"`
	} `json:"hits"`
}

func term(field string, v any) map[string]any {
	return map[string]any{"term": map[string]any{field: v}}
}

func filter(clauses ...any) map[string]any {
	return map[string]any{"bool": map[string]any{"filter": clauses}}
}

// ListByUser implements projections.HistoryIndex.
func (ix *Index) ListByUser(ctx context.Context, userID string, statuses []string, cursor string, limit int) (projections.HistoryPage, error) {
	if err := histkit.CheckID("user_id", userID); err != nil {
		return projections.HistoryPage{}, err
	}
	sts, err := histkit.Statuses(statuses)
	if err != nil {
		return projections.HistoryPage{}, err
	}
	if limit, err = histkit.ListLimit(limit); err != nil {
		return projections.HistoryPage{}, err
	}
	body := map[string]any{
		"size":             limit + 1,
		"track_total_hits": false,
		"query":            filter(term("user_id", userID), map[string]any{"terms": map[string]any{"status": sts}}),
		"sort": []any{
			map[string]any{"ended_at": map[string]any{"order": "desc", "missing": "_last"}},
			map[string]any{"coupon_id": map[string]any{"order": "desc"}},
		},
	}
	if cursor != "" {
		k, err := histkit.DecodeCursor(cursor)
		if err != nil {
			return projections.HistoryPage{}, err
		}
		ended := int64(math.MinInt64) // missing, sorted last in descending order
		if !k.Ended.IsZero() {
			if k.Ended.Before(minNanoTime) || k.Ended.After(maxNanoTime) {
				return projections.HistoryPage{}, domain.Invalid("cursor", "out of range")
			}
			ended = k.Ended.UnixNano()
		}
		body["search_after"] = []any{ended, k.ID}
	}
	var res hits
	if _, err := ix.json(ctx, call{method: http.MethodPost, path: "/" + ix.alias + "/_search", body: mustJSON(body)}, &res); err != nil {
		return projections.HistoryPage{}, err
	}
	page := projections.HistoryPage{Records: make([]projections.CouponRecord, 0, min(limit, len(res.Hits.Hits)))}
	for i, h := range res.Hits.Hits {
		if i == limit {
			page.Next = histkit.EncodeCursor(histkit.KeyOf(&page.Records[limit-1]))
			break
		}
		r, err := fromSource(h.Source)
		if err != nil {
			return projections.HistoryPage{}, err
		}
		page.Records = append(page.Records, r)
	}
	return page, nil
}

// rangeQuery is the query matching documents whose field is set and in r.
// Bounds outside the date_nanos range are clamped (no stored time lies
// outside it); empty tells that nothing can match.
func rangeQuery(field string, r projections.TimeRange) (q map[string]any, empty bool) {
	bounds := map[string]any{}
	if !r.To.IsZero() {
		if !r.To.After(minNanoTime) {
			return nil, true
		}
		if !r.To.After(maxNanoTime) {
			bounds["lt"] = formatTime(r.To)
		}
	}
	if !r.From.IsZero() {
		if r.From.After(maxNanoTime) {
			return nil, true
		}
		if r.From.After(minNanoTime) {
			bounds["gte"] = formatTime(r.From)
		}
	}
	if !r.From.IsZero() && !r.To.IsZero() && !r.From.Before(r.To) {
		return nil, true
	}
	if len(bounds) == 0 {
		return map[string]any{"exists": map[string]any{"field": field}}, false
	}
	return map[string]any{"range": map[string]any{field: bounds}}, false
}

type count struct {
	DocCount int64 `json:"doc_count"`
}

type sum struct {
	Value float64 `json:"value"`
}

func (s sum) int() int64 { return int64(math.Round(s.Value)) }

// search runs a size-0 aggregation search on the alias.
func (ix *Index) search(ctx context.Context, query any, aggs map[string]any, out any) error {
	body := map[string]any{"size": 0, "track_total_hits": false, "query": query, "aggs": aggs}
	var res struct {
		Aggregations json.RawMessage `json:"aggregations"`
	}
	c := call{method: http.MethodPost, path: "/" + ix.alias + "/_search", body: mustJSON(body)}
	if _, err := ix.json(ctx, c, &res); err != nil {
		return err
	}
	if err := json.Unmarshal(res.Aggregations, out); err != nil {
		return fmt.Errorf("esindex: decode aggregations: %w", err)
	}
	return nil
}

// reportAggs are the per-batch sub-aggregations: claims and expirations
// (and redemptions when withRedeemed) in r.
func reportAggs(r projections.TimeRange, withRedeemed bool) map[string]any {
	obtained, _ := rangeQuery("obtained_at", r)
	expiredAt, _ := rangeQuery("expired_at", r)
	aggs := map[string]any{
		"claimed": map[string]any{"filter": obtained},
		"expired": map[string]any{"filter": filter(term("status", histkit.StatusExpired), expiredAt)},
	}
	if withRedeemed {
		aggs["redeemed"] = map[string]any{
			"filter": redeemedFilter(r),
			"aggs":   map[string]any{"discount": map[string]any{"sum": map[string]any{"field": "discount"}}},
		}
	}
	return aggs
}

func redeemedFilter(r projections.TimeRange) map[string]any {
	redeemedAt, _ := rangeQuery("redeemed_at", r)
	return filter(term("status", histkit.StatusRedeemed), redeemedAt)
}

type reportBuckets struct {
	Claimed  count `json:"claimed"`
	Expired  count `json:"expired"`
	Redeemed struct {
		DocCount int64 `json:"doc_count"`
		Discount sum   `json:"discount"`
	} `json:"redeemed"`
}

// BatchReport implements projections.HistoryIndex.
func (ix *Index) BatchReport(ctx context.Context, batchID string, r projections.TimeRange) (projections.BatchReport, error) {
	if err := histkit.CheckID("batch_id", batchID); err != nil {
		return projections.BatchReport{}, err
	}
	if err := histkit.CheckRange(r); err != nil {
		return projections.BatchReport{}, err
	}
	rep := projections.BatchReport{BatchID: batchID}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if _, empty := rangeQuery("", r); empty {
		return rep, nil
	}
	var res reportBuckets
	if err := ix.search(ctx, filter(term("batch_id", batchID)), reportAggs(r, true), &res); err != nil {
		return projections.BatchReport{}, err
	}
	rep.Claimed, rep.Expired = res.Claimed.DocCount, res.Expired.DocCount
	rep.Redeemed, rep.TotalDiscount = res.Redeemed.DocCount, res.Redeemed.Discount.int()
	return rep, nil
}

type rankedBucket struct {
	Key      string `json:"key"`
	DocCount int64  `json:"doc_count"`
	Discount sum    `json:"discount"`
}

// rank lists the values of field (batch_id, user_id) with the most
// redemptions in r.
func (ix *Index) rank(ctx context.Context, field string, r projections.TimeRange, limit int) ([]rankedBucket, error) {
	if err := histkit.CheckRange(r); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, empty := rangeQuery("", r); empty {
		return nil, nil
	}
	aggs := map[string]any{"top": map[string]any{
		"terms": map[string]any{
			"field": field,
			"size":  limit,
			"order": []any{
				map[string]any{"_count": "desc"},
				map[string]any{"discount": "desc"},
				map[string]any{"_key": "asc"},
			},
		},
		"aggs": map[string]any{"discount": map[string]any{"sum": map[string]any{"field": "discount"}}},
	}}
	var res struct {
		Top struct {
			Buckets []rankedBucket `json:"buckets"`
		} `json:"top"`
	}
	if err := ix.search(ctx, redeemedFilter(r), aggs, &res); err != nil {
		return nil, err
	}
	return res.Top.Buckets, nil
}

// TopBatches implements projections.HistoryIndex.
func (ix *Index) TopBatches(ctx context.Context, r projections.TimeRange, limit int) ([]projections.BatchReport, error) {
	limit, err := histkit.TopLimit(limit)
	if err != nil {
		return nil, err
	}
	ranked, err := ix.rank(ctx, "batch_id", r, limit)
	if err != nil {
		return nil, err
	}
	out := make([]projections.BatchReport, 0, len(ranked))
	if len(ranked) == 0 {
		return out, nil
	}
	ids := make([]string, len(ranked))
	for i, b := range ranked {
		ids[i] = b.Key
	}
	aggs := map[string]any{"by": map[string]any{
		"terms": map[string]any{"field": "batch_id", "size": len(ids)},
		"aggs":  reportAggs(r, false),
	}}
	var res struct {
		By struct {
			Buckets []struct {
				Key string `json:"key"`
				reportBuckets
			} `json:"buckets"`
		} `json:"by"`
	}
	query := filter(map[string]any{"terms": map[string]any{"batch_id": ids}})
	if err := ix.search(ctx, query, aggs, &res); err != nil {
		return nil, err
	}
	byID := make(map[string]reportBuckets, len(res.By.Buckets))
	for _, b := range res.By.Buckets {
		byID[b.Key] = b.reportBuckets
	}
	for _, b := range ranked {
		d := byID[b.Key]
		out = append(out, projections.BatchReport{
			BatchID: b.Key, Claimed: d.Claimed.DocCount, Expired: d.Expired.DocCount,
			Redeemed: b.DocCount, TotalDiscount: b.Discount.int(),
		})
	}
	return out, nil
}

// TopUsers implements projections.HistoryIndex.
func (ix *Index) TopUsers(ctx context.Context, r projections.TimeRange, limit int) ([]projections.UserReport, error) {
	limit, err := histkit.TopLimit(limit)
	if err != nil {
		return nil, err
	}
	ranked, err := ix.rank(ctx, "user_id", r, limit)
	if err != nil {
		return nil, err
	}
	out := make([]projections.UserReport, 0, len(ranked))
	for _, b := range ranked {
		out = append(out, projections.UserReport{UserID: b.Key, Redeemed: b.DocCount, TotalDiscount: b.Discount.int()})
	}
	return out, nil
}

// ---- rebuilds ----

// maxRebuildNames bounds the names Rebuild tries past taken ones.
const maxRebuildNames = 100

// Rebuild implements projections.HistoryIndex: it creates the next
// generation index (empty, checkpoint 0) for the returned handle.
func (ix *Index) Rebuild(ctx context.Context) (projections.HistoryRebuild, error) {
	cur, err := ix.current(ctx)
	if err != nil {
		return nil, err
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(cur, ix.genPrefix), 10, 63)
	if err != nil || !strings.HasPrefix(cur, ix.genPrefix) {
		return nil, fmt.Errorf("esindex: alias %s points at %s, not a %sN generation", ix.alias, cur, ix.genPrefix)
	}
	for range maxRebuildNames {
		n++
		name := ix.genPrefix + strconv.FormatUint(n, 10)
		existed, err := ix.createIndex(ctx, name, recordMapping(), false)
		if err != nil {
			return nil, err
		}
		if !existed {
			return &Rebuild{ix: ix, name: name}, nil
		}
	}
	return nil, fmt.Errorf("esindex: %d generation names after %s are taken (leftovers of rebuilds?)", maxRebuildNames, cur)
}

// Rebuild writes a fresh generation; see the package doc.
type Rebuild struct {
	ix   *Index
	name string
	mu   sync.RWMutex // held exclusively by Commit and Abort
	done bool
}

// Name is the name of the rebuild's index.
func (rb *Rebuild) Name() string { return rb.name }

func (rb *Rebuild) use() error {
	if rb.done {
		return ErrRebuildFinished
	}
	return nil
}

// Upsert writes to the new generation.
func (rb *Rebuild) Upsert(ctx context.Context, recs []projections.CouponRecord) error {
	rb.mu.RLock()
	defer rb.mu.RUnlock()
	if err := rb.use(); err != nil {
		return err
	}
	return rb.ix.upsert(ctx, rb.name, false, recs)
}

// Get reads from the new generation.
func (rb *Rebuild) Get(ctx context.Context, couponIDs []string) (map[string]projections.CouponRecord, error) {
	rb.mu.RLock()
	defer rb.mu.RUnlock()
	if err := rb.use(); err != nil {
		return nil, err
	}
	return rb.ix.get(ctx, rb.name, couponIDs)
}

// SaveCheckpoint sets the new generation's checkpoint.
func (rb *Rebuild) SaveCheckpoint(ctx context.Context, pos uint64) error {
	rb.mu.RLock()
	defer rb.mu.RUnlock()
	if err := rb.use(); err != nil {
		return err
	}
	return rb.ix.saveCheckpoint(ctx, rb.name, pos)
}

// Commit moves the alias to the new generation and deletes the old index
// in one _aliases request, then deletes the old meta document.
func (rb *Rebuild) Commit(ctx context.Context) error {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if err := rb.use(); err != nil {
		return err
	}
	ix := rb.ix
	old, err := ix.current(ctx)
	if err != nil {
		return err
	}
	if old == rb.name {
		rb.done = true
		return ErrRebuildFinished
	}
	body := mustJSON(map[string]any{"actions": []any{
		map[string]any{"remove": map[string]any{"index": old, "alias": ix.alias, "must_exist": true}},
		map[string]any{"add": map[string]any{"index": rb.name, "alias": ix.alias}},
		map[string]any{"remove_index": map[string]any{"index": old}},
	}})
	c := call{method: http.MethodPost, path: "/_aliases", body: body}
	status, b, err := ix.do(ctx, c)
	if err != nil {
		return err
	}
	switch {
	case status == http.StatusOK:
	case status == http.StatusNotFound:
		e := parseError(b)
		return domain.Errorf(domain.ErrConflict, "esindex: commit %s: the alias or an index moved meanwhile: %s: %s", rb.name, e.Type, e.Reason)
	default:
		return statusErr(c, status, b)
	}
	rb.done = true
	if err := ix.deleteDoc(ctx, ix.meta, old); err != nil {
		return fmt.Errorf("esindex: committed %s, but deleting the meta document of %s failed: %w", rb.name, old, err)
	}
	return nil
}

// Abort deletes the new generation's index and meta document.
func (rb *Rebuild) Abort(ctx context.Context) error {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if err := rb.use(); err != nil {
		return err
	}
	ix := rb.ix
	cur, err := ix.current(ctx)
	if err != nil {
		return err
	}
	if cur == rb.name { // committed by someone else: never delete the live index
		rb.done = true
		return ErrRebuildFinished
	}
	if _, err := ix.json(ctx, call{method: http.MethodDelete, path: "/" + rb.name}, nil, http.StatusOK, http.StatusNotFound); err != nil {
		return err
	}
	rb.done = true
	return ix.deleteDoc(ctx, ix.meta, rb.name)
}
