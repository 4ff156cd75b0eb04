// Command pgclaim is the relational baseline of scripts/bench.sh: a minimal
// claim endpoint on PostgreSQL, compatible enough with couponsd's HTTP API for
// cmd/loadgen to drive it and check its invariants. It is a measuring stick,
// not a product: one batch table, one claims table, no projections, no
// events, no workers.
//
// Each claim is one transaction on a pooled connection:
//
//	BEGIN
//	UPDATE batches SET stock = stock - 1
//	  WHERE id = $1 AND stock > 0 AND starts_at <= $2 AND ends_at > $2
//	INSERT INTO claims (coupon_id, batch_id, user_id, idem_key, claimed_at) VALUES (...)
//	COMMIT
//
// with UNIQUE (batch_id, user_id) on claims, so per_user_limit is always 1.
// Answers are couponsd's: 201 with the coupon, 201 + Idempotent-Replayed: true
// when the shopper's claim with the same Idempotency-Key already exists, 409
// already_claimed, 410 sold_out, 404, 422 not_claimable outside the window.
//
// Routes (HS256 bearer tokens with sub and role, as minted by
// `couponsd token` or cmd/loadgen):
//
//	GET  /healthz
//	POST /v1/batches                       admin: {total_stock, per_user_limit (must be 1), claim_starts_at, claim_ends_at}
//	GET  /v1/batches/{id}                  {id, total_stock, remaining, claimed, rules.per_user_limit}
//	POST /v1/batches/{id}/claim            user: the caller is the token's sub
//	GET  /v1/users/{uid}/coupons           admin or the user: usable coupons (all, one page)
//	GET  /v1/me/coupons                    the caller's coupons
//	GET  /v1/coupons/{id}/events           admin: a synthesized coupon.claimed.v1 from the row
//	GET  /v1/reports/batches/{id}          admin: {claimed}
//
// Usage:
//
//	pgclaim [--addr 127.0.0.1:8090] [--dsn postgres://postgres@127.0.0.1:5432/test?sslmode=disable]
//	        [--schema pgclaim] [--pool 32] [--secret S | $COUPONS_JWT_SECRET]
//
// It creates the schema and its two tables if missing; dropping them is the
// caller's job (DROP SCHEMA ... CASCADE).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	dsn := flag.String("dsn", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL")
	schema := flag.String("schema", "pgclaim", "schema holding the tables (created if missing)")
	pool := flag.Int("pool", 32, "PostgreSQL connections")
	secret := flag.String("secret", os.Getenv("COUPONS_JWT_SECRET"), "HS256 key (default $COUPONS_JWT_SECRET)")
	flag.Parse()
	if len(*secret) < 32 {
		log.Fatal("pgclaim: --secret (or COUPONS_JWT_SECRET) of at least 32 bytes is required")
	}
	if !regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`).MatchString(*schema) {
		log.Fatalf("pgclaim: --schema %q: lower-case letters, digits and _ only", *schema)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	db, err := openPool(ctx, *dsn, *schema, *pool)
	if err != nil {
		log.Fatalf("pgclaim: %v", err)
	}
	defer db.close()

	s := &server{db: db, secret: []byte(*secret), parser: jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithStrictDecoding(),
		jwt.WithExpirationRequired(),
	)}
	srv := &http.Server{Addr: *addr, Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("pgclaim on %s (schema %s, %d connections)", *addr, *schema, *pool)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("pgclaim: %v", err)
	}
}

// pool is a fixed set of connections (pgx.Conn is not safe for concurrent use).
type pool struct{ conns chan *pgx.Conn }

const ddl = `
CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE IF NOT EXISTS %[1]s.batches (
  id             text PRIMARY KEY,
  total_stock    bigint NOT NULL,
  stock          bigint NOT NULL,
  per_user_limit int NOT NULL,
  starts_at      timestamptz NOT NULL,
  ends_at        timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS %[1]s.claims (
  coupon_id  text PRIMARY KEY,
  batch_id   text NOT NULL REFERENCES %[1]s.batches(id),
  user_id    text NOT NULL,
  idem_key   text NOT NULL,
  claimed_at timestamptz NOT NULL,
  UNIQUE (batch_id, user_id)
);`

func openPool(ctx context.Context, dsn, schema string, n int) (*pool, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["search_path"] = schema
	cfg.RuntimeParams["application_name"] = "pgclaim"
	p := &pool{conns: make(chan *pgx.Conn, n)}
	for i := range n {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("connect: %w", err)
		}
		if i == 0 {
			if _, err := c.Exec(ctx, fmt.Sprintf(ddl, schema)); err != nil {
				_ = c.Close(ctx)
				p.close()
				return nil, fmt.Errorf("create tables: %w", err)
			}
		}
		p.conns <- c
	}
	return p, nil
}

func (p *pool) get(ctx context.Context) (*pgx.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pool) put(c *pgx.Conn) {
	if c.IsClosed() {
		// A broken connection is not given back; the pool shrinks (this is a
		// benchmark, a dead database ends it anyway).
		return
	}
	p.conns <- c
}

func (p *pool) close() {
	for {
		select {
		case c := <-p.conns:
			_ = c.Close(context.Background())
		default:
			return
		}
	}
}

type server struct {
	db     *pool
	secret []byte
	parser *jwt.Parser
}

type principal struct{ sub, role string }

type tokenClaims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("POST /v1/batches", s.auth("admin", s.createBatch))
	mux.HandleFunc("GET /v1/batches/{id}", s.auth("", s.getBatch))
	mux.HandleFunc("POST /v1/batches/{id}/claim", s.auth("user", s.claim))
	mux.HandleFunc("GET /v1/users/{uid}/coupons", s.auth("", s.userCoupons))
	mux.HandleFunc("GET /v1/me/coupons", s.auth("", s.userCoupons))
	mux.HandleFunc("GET /v1/coupons/{id}/events", s.auth("admin", s.couponEvents))
	mux.HandleFunc("GET /v1/reports/batches/{id}", s.auth("admin", s.report))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fail(w, 404, "not_found", "no such route") })
	return mux
}

// auth checks the bearer token (and the role, when given).
func (s *server) auth(role string, next func(http.ResponseWriter, *http.Request, principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			fail(w, 401, "unauthenticated", "missing bearer token")
			return
		}
		var cl tokenClaims
		if _, err := s.parser.ParseWithClaims(tok, &cl, func(*jwt.Token) (any, error) { return s.secret, nil }); err != nil || cl.Subject == "" {
			fail(w, 401, "unauthenticated", "token is invalid")
			return
		}
		if role != "" && cl.Role != role {
			fail(w, 403, "forbidden", "role "+role+" required")
			return
		}
		next(w, r, principal{sub: cl.Subject, role: cl.Role})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = 500, []byte(`{"error":{"code":"internal","message":"encode"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func fail(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func internal(w http.ResponseWriter, err error) {
	status := 500
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		status = 503
	}
	fail(w, status, "internal", err.Error())
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// withConn runs fn on a pooled connection.
func (s *server) withConn(ctx context.Context, fn func(*pgx.Conn) error) error {
	c, err := s.db.get(ctx)
	if err != nil {
		return err
	}
	defer s.db.put(c)
	return fn(c)
}

func (s *server) createBatch(w http.ResponseWriter, r *http.Request, _ principal) {
	var req struct {
		TotalStock    int64     `json:"total_stock"`
		PerUserLimit  int       `json:"per_user_limit"`
		ClaimStartsAt time.Time `json:"claim_starts_at"`
		ClaimEndsAt   time.Time `json:"claim_ends_at"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, 400, "invalid_argument", err.Error())
		return
	}
	if req.TotalStock < 1 || !req.ClaimEndsAt.After(req.ClaimStartsAt) {
		fail(w, 400, "invalid_argument", "total_stock >= 1 and claim_starts_at < claim_ends_at are required")
		return
	}
	if req.PerUserLimit != 1 {
		fail(w, 400, "invalid_argument", "per_user_limit must be 1 (UNIQUE (batch_id, user_id))")
		return
	}
	id := newID()
	err := s.withConn(r.Context(), func(c *pgx.Conn) error {
		_, err := c.Exec(r.Context(), `INSERT INTO batches (id, total_stock, stock, per_user_limit, starts_at, ends_at) VALUES ($1, $2, $2, $3, $4, $5)`,
			id, req.TotalStock, req.PerUserLimit, req.ClaimStartsAt, req.ClaimEndsAt)
		return err
	})
	if err != nil {
		internal(w, err)
		return
	}
	writeJSON(w, 201, map[string]any{"id": id, "total_stock": req.TotalStock})
}

func (s *server) getBatch(w http.ResponseWriter, r *http.Request, _ principal) {
	id := r.PathValue("id")
	var total, stock, claimed int64
	var limit int
	err := s.withConn(r.Context(), func(c *pgx.Conn) error {
		return c.QueryRow(r.Context(), `SELECT b.total_stock, b.stock, b.per_user_limit, (SELECT count(*) FROM claims WHERE batch_id = b.id) FROM batches b WHERE b.id = $1`, id).
			Scan(&total, &stock, &limit, &claimed)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		fail(w, 404, "not_found", "no batch "+id)
		return
	}
	if err != nil {
		internal(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"id": id, "total_stock": total, "remaining": stock, "claimed": claimed,
		"rules": map[string]any{"per_user_limit": limit}})
}

type couponView struct {
	ID       string    `json:"id"`
	BatchID  string    `json:"batch_id"`
	UserID   string    `json:"user_id"`
	Status   string    `json:"status"`
	Obtained time.Time `json:"obtained_at"`
}

// claim is the hot path: one transaction, UPDATE the stock then INSERT the
// claim; the unique index refuses a second claim of the same shopper.
func (s *server) claim(w http.ResponseWriter, r *http.Request, p principal) {
	ctx := r.Context()
	batchID, user, key := r.PathValue("id"), p.sub, r.Header.Get("Idempotency-Key")
	now := time.Now().UTC()
	coupon := newID()
	var outcome string // "ok", "dup" (unique violation), "none" (no stock row updated)
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(context.Background()) }()
		tag, err := tx.Exec(ctx, `UPDATE batches SET stock = stock - 1 WHERE id = $1 AND stock > 0 AND starts_at <= $2 AND ends_at > $2`, batchID, now)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			outcome = "none"
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO claims (coupon_id, batch_id, user_id, idem_key, claimed_at) VALUES ($1, $2, $3, $4, $5)`,
			coupon, batchID, user, key, now)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			outcome = "dup"
			return nil
		}
		if err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		outcome = "ok"
		return nil
	})
	if err != nil {
		internal(w, err)
		return
	}
	if outcome == "ok" {
		writeJSON(w, 201, couponView{ID: coupon, BatchID: batchID, UserID: user, Status: "usable", Obtained: now})
		return
	}
	// Refused: a replay of the shopper's claim, already claimed, sold out,
	// outside the window or no such batch. Off the hot path.
	var prev couponView
	var prevKey string
	var stock int64
	var starts, ends time.Time
	found := true
	err = s.withConn(ctx, func(c *pgx.Conn) error {
		err := c.QueryRow(ctx, `SELECT coupon_id, idem_key, claimed_at FROM claims WHERE batch_id = $1 AND user_id = $2`, batchID, user).
			Scan(&prev.ID, &prevKey, &prev.Obtained)
		if errors.Is(err, pgx.ErrNoRows) {
			prev.ID = ""
		} else if err != nil {
			return err
		}
		err = c.QueryRow(ctx, `SELECT stock, starts_at, ends_at FROM batches WHERE id = $1`, batchID).Scan(&stock, &starts, &ends)
		if errors.Is(err, pgx.ErrNoRows) {
			found = false
			return nil
		}
		return err
	})
	switch {
	case err != nil:
		internal(w, err)
	case prev.ID != "" && key != "" && prevKey == key:
		prev.BatchID, prev.UserID, prev.Status = batchID, user, "usable"
		w.Header().Set("Idempotent-Replayed", "true")
		writeJSON(w, 201, prev)
	case !found:
		fail(w, 404, "not_found", "no batch "+batchID)
	case prev.ID != "":
		fail(w, 409, "already_claimed", "per_user_limit 1 reached")
	case now.Before(starts) || !now.Before(ends):
		fail(w, 422, "not_claimable", "outside the claim window")
	default:
		fail(w, 410, "sold_out", "sold out")
	}
}

func (s *server) userCoupons(w http.ResponseWriter, r *http.Request, p principal) {
	uid := r.PathValue("uid")
	if uid == "" {
		uid = p.sub
	}
	if p.role != "admin" && uid != p.sub {
		fail(w, 403, "forbidden", "not your coupons")
		return
	}
	out := []couponView{}
	err := s.withConn(r.Context(), func(c *pgx.Conn) error {
		rows, err := c.Query(r.Context(), `SELECT coupon_id, batch_id, claimed_at FROM claims WHERE user_id = $1 ORDER BY claimed_at DESC`, uid)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v := couponView{UserID: uid, Status: "usable"}
			if err := rows.Scan(&v.ID, &v.BatchID, &v.Obtained); err != nil {
				return err
			}
			out = append(out, v)
		}
		return rows.Err()
	})
	if err != nil {
		internal(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"coupons": out, "next_cursor": ""})
}

func (s *server) couponEvents(w http.ResponseWriter, r *http.Request, _ principal) {
	id := r.PathValue("id")
	var batchID, user, key string
	var at time.Time
	err := s.withConn(r.Context(), func(c *pgx.Conn) error {
		return c.QueryRow(r.Context(), `SELECT batch_id, user_id, idem_key, claimed_at FROM claims WHERE coupon_id = $1`, id).Scan(&batchID, &user, &key, &at)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		fail(w, 404, "not_found", "no coupon "+id)
		return
	}
	if err != nil {
		internal(w, err)
		return
	}
	ev := map[string]any{"type": "coupon.claimed.v1", "data": map[string]any{
		"coupon_id": id, "user_id": user, "idempotency_key": key, "terms": map[string]any{"batch_id": batchID}, "at": at,
	}}
	writeJSON(w, 200, map[string]any{"coupon_id": id, "events": []any{ev}})
}

func (s *server) report(w http.ResponseWriter, r *http.Request, _ principal) {
	id := r.PathValue("id")
	var n int64
	err := s.withConn(r.Context(), func(c *pgx.Conn) error {
		return c.QueryRow(r.Context(), `SELECT count(*) FROM claims WHERE batch_id = $1`, id).Scan(&n)
	})
	if err != nil {
		internal(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"batch_id": id, "claimed": n})
}
