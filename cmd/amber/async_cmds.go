package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/amberfn/amber/api"
)

// cmdDLQ prints the dead-letter list: events that failed every attempt.
func cmdDLQ(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dlq", flag.ContinueOnError)
	output := fs.String("o", "table", "output: table or json")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return fmt.Errorf("usage: amber dlq [NAME] [-o json]")
	}
	name := ""
	if len(pos) == 1 {
		name = pos[0]
	}
	dl, err := client().DeadLetters(ctx, name)
	if err != nil {
		return err
	}
	if done, err := emitJSON(stdout, *output, dl); done || err != nil {
		return err
	}
	if len(dl) == 0 {
		fmt.Fprintln(stdout, "no dead letters")
		return nil
	}
	for _, d := range dl {
		fmt.Fprintf(stdout, "event %s  %s v%d  queued %s  dead %s  source %s  %d attempts\n",
			d.EventID, d.Function, d.Version, d.EnqueuedAt.Format(time.RFC3339), d.DeadAt.Format(time.RFC3339), d.Source, len(d.Attempts))
		for i, a := range d.Attempts {
			fmt.Fprintf(stdout, "  #%d %s  request %s  agent %s: %s\n", i+1, a.At.Format(time.RFC3339), a.RequestID, dash(a.Agent), a.Error)
		}
		if len(d.Payload) > 0 {
			fmt.Fprintf(stdout, "  payload %s\n", clip(string(d.Payload), 200))
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// cmdSchedule sets, shows or removes a function's cron trigger.
func cmdSchedule(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("schedule", flag.ContinueOnError)
	off := fs.Bool("off", false, "remove the schedule")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	const use = `usage: amber schedule NAME "EXPR" | amber schedule NAME --off | amber schedule
  EXPR: 5-field cron, UTC ("*/5 * * * *", "0 9 * * mon-fri") or rate(N minutes|hours|days)`
	c := client()
	switch {
	case len(pos) == 0 && !*off:
		list, err := c.Schedules(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FUNCTION\tEXPRESSION\tNEXT (UTC)\tLAST FIRED\tFIRED")
		for _, s := range list {
			last := "-"
			if !s.LastFiredAt.IsZero() {
				last = s.LastFiredAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", s.Function, s.Expression, s.NextAt.Format(time.RFC3339), last, s.Fired)
		}
		return tw.Flush()
	case len(pos) == 1 && *off:
		if err := c.DeleteSchedule(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "schedule of %s removed\n", pos[0])
		return nil
	case len(pos) >= 2 && !*off:
		// Accept the expression quoted or as separate words.
		s, err := c.SetSchedule(ctx, pos[0], strings.Join(pos[1:], " "))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s, next at %s\n", s.Function, s.Expression, s.NextAt.Format(time.RFC3339))
		return nil
	default:
		return fmt.Errorf("%s", use)
	}
}

// cmdBill prints the bill: per function requests, GB-seconds, warmth and
// cost, with totals and what the warm pools cost per hour.
func cmdBill(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bill", flag.ContinueOnError)
	sinceS := fs.String("since", "24h", "start: a duration back from now (24h, 720h) or an RFC 3339 time")
	untilS := fs.String("until", "", "end: a duration back from now or an RFC 3339 time (default now)")
	by := fs.String("by", "", "also break down by hour or day")
	output := fs.String("o", "table", "output: table or json")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("usage: amber bill [--since 24h|RFC3339] [--until …] [--by hour|day] [-o json]")
	}
	now := time.Now()
	since, err := when("since", *sinceS, now)
	if err != nil {
		return err
	}
	var until time.Time
	if *untilS != "" {
		if until, err = when("until", *untilS, now); err != nil {
			return err
		}
	}
	b, err := client().Bill(ctx, since, until, *by)
	if err != nil {
		return err
	}
	if done, err := emitJSON(stdout, *output, b); done || err != nil {
		return err
	}
	return printBill(stdout, b)
}

func when(field, v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, api.Invalid(field, "%q: want a duration back from now (24h) or an RFC 3339 time", v)
}

func printBill(w io.Writer, b *api.Bill) error {
	fmt.Fprintf(w, "bill %s – %s (UTC, whole hours)\n", b.Since.Format("2006-01-02 15:04"), b.Until.Format("2006-01-02 15:04"))
	fmt.Fprintf(w, "prices: $%.10f per GB-s, $%.2f per 1M requests, $%.10f per GB-s of warmth", b.Prices.PerGBSecond, b.Prices.PerMillionRequests, b.Prices.WarmthPerGBSecond)
	if b.Prices.FreeTier {
		fmt.Fprintf(w, "; free tier %.0f GB-s and %d requests a month", b.Prices.FreeGBSeconds, b.Prices.FreeRequests)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := "FUNCTION\tREQUESTS\tERRORS\tCOMPUTE GB-s\tWARMTH GB-s\tREQUESTS $\tCOMPUTE $\tWARMTH $\tCOST $\t"
	row := func(label string, u api.Usage) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%.3f\t%.6f\t%.6f\t%.6f\t%.6f\t\n", label, u.Requests, u.Errors, u.GBSeconds, u.WarmthGBSeconds,
			u.RequestCost, u.ComputeCost, u.WarmthCost, u.Cost)
	}
	if b.By != "" {
		layout := "2006-01-02 15:00"
		if b.By == "day" {
			layout = "2006-01-02"
		}
		fmt.Fprintln(tw, strings.ToUpper(b.By)+"\t"+head)
		for _, u := range b.Periods {
			fmt.Fprintf(tw, "%s\t", u.Period.Format(layout))
			row(u.Function, u)
		}
		tw.Flush()
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	}
	fmt.Fprintln(tw, head)
	for _, u := range b.Functions {
		row(u.Function, u)
	}
	t := b.Totals
	if b.FreeTierDiscount > 0 {
		fmt.Fprintf(tw, "free tier\t%d\t\t%.3f\t\t\t\t\t-%.6f\t\n", b.FreeTierRequests, b.FreeTierGBSeconds, b.FreeTierDiscount)
	}
	row("TOTAL", t)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwarm pools now: $%.4f per hour", b.WarmPoolsCostPerHour)
	var parts []string
	for _, p := range b.WarmPools {
		parts = append(parts, fmt.Sprintf("%s %d × %d MB $%.4f/h", p.Function, p.MinWarm, p.MemoryMB, p.CostPerHour))
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
	return nil
}
