package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/couponsd/couponsd/commands"
)

// grantsCmd: couponsd grants status JOB [--once] polls a running couponsd
// and draws the job's progress until it finishes.
func grantsCmd(ctx context.Context, cfg Config, args []string, stdout io.Writer) error {
	if len(args) < 2 || args[0] != "status" {
		return errors.New("usage: couponsd grants status JOB [--once] [--interval 500ms]")
	}
	job := args[1]
	fs := flag.NewFlagSet("grants status", flag.ContinueOnError)
	once := fs.Bool("once", false, "print the status once and return")
	every := fs.Duration("interval", 500*time.Millisecond, "how often to poll")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	c, err := newAPIClient(cfg)
	if err != nil {
		return err
	}
	start := time.Now()
	var st commands.GrantJobStatus
	for {
		if err := c.do(ctx, http.MethodGet, "/v1/grant-jobs/"+url.PathEscape(job), nil, &st); err != nil {
			return err
		}
		if st.State == commands.GrantJobFinished || *once {
			break
		}
		fmt.Fprintf(stdout, "\r%s", grantProgressLine(st, time.Since(start)))
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout)
			return ctx.Err()
		case <-time.After(*every):
		}
	}
	fmt.Fprintf(stdout, "\r%s\n", grantProgressLine(st, time.Since(start)))
	return nil
}

// grantProgressLine draws a job's progress: a bar over the listed entries
// counted so far, the counts and the rate seen by this command.
func grantProgressLine(st commands.GrantJobStatus, elapsed time.Duration) string {
	const width = 30
	counted := st.Granted + st.Skipped + st.NotGranted + st.Failed
	frac := 0.0
	if st.Total > 0 {
		frac = float64(counted) / float64(st.Total)
	}
	n := min(int(frac*width), width)
	rate := ""
	if s := elapsed.Seconds(); s > 0 && st.State != commands.GrantJobFinished {
		rate = fmt.Sprintf("  %.0f/s", float64(st.Granted)/s)
	}
	outcome := ""
	if st.Outcome != "" {
		outcome = " (" + st.Outcome + ")"
	}
	return fmt.Sprintf("[%s%s] %3.0f%%  granted %d  skipped %d  not granted %d  failed %d  of %d  shards %d/%d%s  %s%s",
		strings.Repeat("#", n), strings.Repeat("-", width-n), frac*100, st.Granted, st.Skipped, st.NotGranted, st.Failed,
		st.Total, st.ShardsDone, st.Shards, rate, st.State, outcome)
}
