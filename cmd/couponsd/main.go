// Command couponsd runs the coupon service and its operator commands:
//
//	couponsd                       serve (embedded back ends unless configured)
//	couponsd token --sub U --role R   print a bearer token
//	couponsd guard rebuild         rebuild the Redis stock guard from the event store
//	couponsd replay | audit | verify  operator commands against a running service
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/infra/httpapi"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "couponsd:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	cfg, err := ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, cfg, log)
	case "token":
		return token(cfg, args, stdout)
	case "guard":
		if len(args) != 1 || args[0] != "rebuild" {
			return errors.New("usage: couponsd guard rebuild")
		}
		return rebuildGuard(ctx, cfg, log, stdout)
	case "replay":
		return replayCmd(ctx, cfg, args, stdout)
	case "audit":
		return auditCmd(ctx, cfg, args, stdout)
	case "verify":
		return verifyCmd(ctx, cfg, stdout)
	case "grants":
		return grantsCmd(ctx, cfg, args, stdout)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q (try couponsd help)", cmd)
	}
}

const usage = `usage: couponsd [command]
  serve (default)                 run the service
  token --sub USER --role ROLE    print a bearer token (roles: user, admin, service)
  guard rebuild                   rebuild the Redis stock guard from the event store (service stopped)
  replay [--projection NAME] [--from POSITION]
                                  rebuild projections (view, history) in a running service, or re-apply from a position
  audit coupon ID | audit user ID print an event history from the event store
  grants status JOB [--once]      show a grant job's progress in a running service until it finishes
  verify                          compare the guard, the view and the history index with the event store`

func token(cfg Config, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	sub := fs.String("sub", "", "user id (the token's subject)")
	role := fs.String("role", "user", "user, admin or service")
	ttl := fs.Duration("ttl", 24*time.Hour, "validity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sub == "" {
		return errors.New("token: --sub is required")
	}
	secret, err := jwtSecret(cfg)
	if err != nil {
		return err
	}
	tok, err := httpapi.IssueToken(secret, *sub, *role, *ttl, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

func jwtSecret(cfg Config) ([]byte, error) {
	if cfg.JWTSecret != "" {
		return []byte(cfg.JWTSecret), nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, err
	}
	return httpapi.LoadOrCreateSecret(cfg.DataDir)
}

func rebuildGuard(ctx context.Context, cfg Config, log *slog.Logger, stdout io.Writer) error {
	app, err := open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer app.Close()
	rep, err := app.rebuild.Handle(ctx, commands.RebuildGuard{})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "guard rebuilt: %d batches, %d coupons, up to position %d\n", rep.Batches, rep.Coupons, rep.Position)
	return err
}
