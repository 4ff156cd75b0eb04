package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/couponsd/couponsd/infra/httpapi"
)

// apiClient talks to a running couponsd as an admin: the operator commands
// (replay, verify, audit) run inside the service, which owns the embedded
// store and the embedded Redis.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newAPIClient(cfg Config) (*apiClient, error) {
	base := strings.TrimRight(os.Getenv("COUPONS_URL"), "/")
	if base == "" {
		host, port, err := net.SplitHostPort(cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("COUPONS_ADDR %q: %w", cfg.Addr, err)
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		base = "http://" + net.JoinHostPort(host, port)
	}
	secret, err := jwtSecret(cfg)
	if err != nil {
		return nil, err
	}
	tok, err := httpapi.IssueToken(secret, "couponsd-cli", httpapi.RoleAdmin, 10*time.Minute, time.Now())
	if err != nil {
		return nil, err
	}
	return &apiClient{base: base, token: tok, http: &http.Client{Timeout: 10 * time.Minute}}, nil
}

func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("is couponsd running at %s? %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Error.Code, e.Error.Message)
		}
		return fmt.Errorf("%s %s: %d", method, path, resp.StatusCode)
	}
	return json.Unmarshal(raw, out)
}

type replayStatus struct {
	ID, Projection, Mode, State, Error string
	Done, Position, Head               uint64
	EventsPerSec                       float64 `json:"events_per_sec"`
	ETASeconds                         float64 `json:"eta_seconds"`
}

func replayCmd(ctx context.Context, cfg Config, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	name := fs.String("projection", "", "projection to replay (default: every rebuildable one: view, history)")
	from := fs.Int64("from", -1, "re-apply the events after this position through the live projector instead of rebuilding")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := newAPIClient(cfg)
	if err != nil {
		return err
	}
	names := []string{"view", "history"}
	if *name != "" {
		names = []string{*name}
	}
	for _, n := range names {
		req := map[string]any{"projection": n}
		if *from >= 0 {
			req["from"] = *from
		}
		var st replayStatus
		if err := c.do(ctx, http.MethodPost, "/v1/admin/replays", req, &st); err != nil {
			return err
		}
		for st.State == "running" {
			fmt.Fprintf(stdout, "\r%s", progressLine(st))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
			if err := c.do(ctx, http.MethodGet, "/v1/admin/replays/"+st.ID, nil, &st); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "\r%s\n", progressLine(st))
		if st.State != "finished" {
			return fmt.Errorf("replay of %s %s: %s", n, st.State, st.Error)
		}
	}
	return nil
}

func progressLine(st replayStatus) string {
	const width = 30
	frac := 1.0
	if st.Head > 0 && st.State == "running" {
		frac = float64(st.Position) / float64(st.Head)
	}
	n := int(frac * width)
	return fmt.Sprintf("%-8s [%s%s] %3.0f%%  %d events  %8.0f ev/s  ETA %4.0fs  %s",
		st.Projection, strings.Repeat("#", n), strings.Repeat("-", width-n), frac*100, st.Done, st.EventsPerSec, st.ETASeconds, st.State)
}

type auditEvent struct {
	CouponID   string          `json:"coupon_id"`
	Revision   uint64          `json:"revision"`
	Position   uint64          `json:"position"`
	Type       string          `json:"type"`
	RecordedAt time.Time       `json:"recorded_at"`
	Data       json.RawMessage `json:"data"`
}

func auditCmd(ctx context.Context, cfg Config, args []string, stdout io.Writer) error {
	if len(args) != 2 || (args[0] != "coupon" && args[0] != "user") {
		return errors.New("usage: couponsd audit coupon <id> | couponsd audit user <id>")
	}
	c, err := newAPIClient(cfg)
	if err != nil {
		return err
	}
	var out struct {
		Events []auditEvent `json:"events"`
	}
	path := "/v1/coupons/" + args[1] + "/events"
	if args[0] == "user" {
		path = "/v1/users/" + args[1] + "/events"
	}
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return err
	}
	return printAudit(stdout, args[0] == "user", args[1], out.Events)
}

func printAudit(w io.Writer, byUser bool, id string, evs []auditEvent) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if byUser {
		fmt.Fprintln(tw, "POSITION\tRECORDED AT\tCOUPON\tREV\tEVENT\tDETAILS")
	} else {
		fmt.Fprintln(tw, "POSITION\tRECORDED AT\tREV\tEVENT\tDETAILS")
	}
	for _, e := range evs {
		d := details(e.Data)
		at := e.RecordedAt.UTC().Format("2006-01-02 15:04:05.000")
		if byUser {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", e.Position, at, e.CouponID, e.Revision, e.Type, d)
		} else {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", e.Position, at, e.Revision, e.Type, d)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d events for %s\n", len(evs), id)
	return err
}

// details renders an event's notable fields as k=v pairs.
func details(raw json.RawMessage) string {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	var parts []string
	for _, k := range []string{"user_id", "order_id", "payment_id", "discount", "reason", "usable_again", "hold_until", "idempotency_key"} {
		if v, ok := m[k]; ok && v != "" {
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	if t, ok := m["terms"].(map[string]any); ok {
		parts = append(parts, fmt.Sprintf("batch=%v kind=%v valid_until=%v", t["batch_id"], t["kind"], t["valid_until"]))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func verifyCmd(ctx context.Context, cfg Config, stdout io.Writer) error {
	c, err := newAPIClient(cfg)
	if err != nil {
		return err
	}
	var rep struct {
		UpTo    uint64         `json:"up_to"`
		Checked map[string]int `json:"checked"`
		Drifts  []struct {
			Component, Entity, Field, Expected, Actual string
		} `json:"drifts"`
		Pending []string `json:"pending"`
		Notes   []string `json:"notes"`
	}
	if err := c.do(ctx, http.MethodPost, "/v1/admin/verify", map[string]any{}, &rep); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "verified up to position %d: %v\n", rep.UpTo, rep.Checked)
	for _, n := range rep.Notes {
		fmt.Fprintln(stdout, "note:", n)
	}
	if len(rep.Pending) > 0 {
		fmt.Fprintf(stdout, "%d reservations in flight (not drift): %v\n", len(rep.Pending), rep.Pending)
	}
	if len(rep.Drifts) == 0 {
		fmt.Fprintln(stdout, "no drift")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tENTITY\tFIELD\tEXPECTED\tACTUAL")
	for _, d := range rep.Drifts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Component, d.Entity, d.Field, d.Expected, d.Actual)
	}
	_ = tw.Flush()
	return fmt.Errorf("%d drifts found", len(rep.Drifts))
}
