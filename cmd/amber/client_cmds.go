package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/api/ociarchive"
	"github.com/amberfn/amber/tui"
)

func cmdBuild(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	out := fs.String("o", "", "output OCI image archive")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *out == "" {
		return fmt.Errorf("usage: amber build DIR -o IMAGE.tar")
	}
	tmp, err := os.CreateTemp(dirOf(*out), ".amber-build-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	img, err := ociarchive.Build(pos[0], tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("build %s: %w", pos[0], err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s  manifest %s\n", *out, img.ManifestDigest)
	return nil
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i+1]
	}
	return "."
}

func cmdDeploy(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
	image := fs.String("image", "", "OCI image archive (from amber build), or a registry reference host/repo:tag or …@sha256:…")
	memory := fs.Int("memory", api.DefaultMemory, "memory in MB (128–10240)")
	timeout := fs.Duration("timeout", api.DefaultTimeout, "timeout (1s–900s)")
	var env multi
	fs.Var(&env, "env", "K=V environment variable (repeatable)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: amber deploy NAME --image IMAGE.tar|REGISTRY/REPO:TAG [--memory MB] [--timeout DURATION] [--env K=V ...]")
	}
	spec := api.FunctionSpec{Name: pos[0], MemoryMB: *memory, Timeout: api.Duration(*timeout), Env: map[string]string{}}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("env: %q is not K=V", kv)
		}
		spec.Env[k] = v
	}
	// Check everything but the image before uploading it.
	spec.Image = "sha256:" + strings.Repeat("0", 64)
	if err := spec.Validate(); err != nil {
		return err
	}
	if *image == "" {
		return api.Invalid("image", "--image IMAGE.tar is required")
	}
	if isImageRef(*image) {
		return deployRef(ctx, spec, *image, stdout)
	}
	f, err := os.Open(*image)
	if err != nil {
		return api.Invalid("image", "%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := ociarchive.Inspect(f, st.Size()); err != nil {
		return api.Invalid("image", "%s: %v", *image, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	c := client()
	digest, err := c.UploadImage(ctx, f)
	if err != nil {
		return fmt.Errorf("upload %s: %w", *image, err)
	}
	spec.Image = digest
	fn, err := c.Deploy(ctx, spec)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deployed %s version %d (%d MB, timeout %s, image %s)\n",
		fn.Name, fn.Version, fn.MemoryMB, fn.Timeout, fn.Image[:19])
	return nil
}

// isImageRef reports whether --image names a registry reference rather
// than an archive: no such file, and it parses as a reference.
func isImageRef(image string) bool {
	if _, err := os.Stat(image); err == nil || strings.HasSuffix(image, ".tar") {
		return false
	}
	_, err := api.ParseImageRef(image)
	return err == nil
}

// deployRef deploys a registry reference: the scheduler resolves it to a
// linux/amd64 manifest, which the function is pinned to; the function's
// home agent pulls it before the version is stored, its progress shown.
func deployRef(ctx context.Context, spec api.FunctionSpec, ref string, stdout io.Writer) error {
	c := client()
	start := time.Now()
	res, err := c.ResolveImage(ctx, ref)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "resolved %s in %s\n  %s\n  manifest %s (%s), %d layers, %s\n",
		res.Ref, time.Since(start).Round(time.Millisecond), res.Image, res.Manifest, res.Platform, res.Layers, humanBytes(res.Size))
	spec.Image, spec.ImageRef = res.Image, ref
	fn, err := c.DeployWithProgress(ctx, spec, func(p api.DeployProgress) {
		fmt.Fprintln(stdout, progressLine(p))
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deployed %s version %d (%d MB, timeout %s, image %s)\n",
		fn.Name, fn.Version, fn.MemoryMB, fn.Timeout, fn.Image)
	return nil
}

// progressLine is one pull progress line: "pulling 12.3/51.1 MB".
func progressLine(p api.DeployProgress) string {
	if p.Total == 0 && p.Bytes == 0 {
		return p.Status
	}
	return fmt.Sprintf("%s %.1f/%.1f MB", p.Status, float64(p.Bytes)/1e6, float64(p.Total)/1e6)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func cmdInvoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("invoke", flag.ContinueOnError)
	data := fs.String("data", "{}", "payload: JSON, or @FILE")
	verbose := fs.Bool("v", false, "print start kind and timings to stderr")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: amber invoke NAME [--data JSON | --data @FILE]")
	}
	payload := []byte(*data)
	if strings.HasPrefix(*data, "@") {
		if payload, err = os.ReadFile((*data)[1:]); err != nil {
			return api.Invalid("data", "%v", err)
		}
	}
	res, err := client().Invoke(ctx, pos[0], payload)
	if err != nil {
		return err
	}
	if *verbose {
		fmt.Fprintf(stderr, "request %s  %s start on %s  init %s  duration %s  billed %d ms\n",
			res.RequestID, res.StartKind, res.Agent, res.InitDuration.Round(time.Microsecond),
			res.Duration.Round(time.Microsecond), res.BilledMs)
	}
	if res.FunctionError != "" {
		stderr.Write(res.Payload)
		fmt.Fprintln(stderr)
		return exitError{1}
	}
	stdout.Write(res.Payload)
	if len(res.Payload) > 0 && res.Payload[len(res.Payload)-1] != '\n' {
		fmt.Fprintln(stdout)
	}
	return nil
}

func cmdLs(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ls", flag.ContinueOnError)
	output := fs.String("o", "table", "output: table or json")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	fns, err := client().Functions(ctx)
	if err != nil {
		return err
	}
	if done, err := emitJSON(stdout, *output, fns); done || err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tMEMORY\tTIMEOUT\tINVOCATIONS\tLAST START\tINSTANCES")
	for _, f := range fns {
		last := string(f.Stats.LastStartKind)
		if last == "" {
			last = "-"
		}
		var inst []string
		for _, in := range f.Instances {
			state := string(in.State)
			if in.Frozen {
				state += ", frozen"
			}
			inst = append(inst, fmt.Sprintf("%s/%s(%s, %d MB)", in.Agent, in.ID, state, in.MaxMemoryMB))
		}
		if len(inst) == 0 {
			inst = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d MB\t%s\t%d\t%s\t%s\n", f.Name, f.Version, f.MemoryMB, f.Timeout,
			f.Stats.Invocations, last, strings.Join(inst, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// How each agent starts new instances of each version, and why.
	var snaps []string
	seen := map[string]bool{}
	for _, f := range fns {
		for _, in := range f.Instances {
			line := fmt.Sprintf("  %s v%d on %s: %s", in.Function, in.Version, in.Agent, in.Snapshot)
			if in.Snapshot != "" && !seen[line] {
				seen[line] = true
				snaps = append(snaps, line)
			}
		}
	}
	if len(snaps) > 0 {
		fmt.Fprintf(stdout, "\nsnapshots:\n%s\n", strings.Join(snaps, "\n"))
	}
	return nil
}

// The console sees the cluster through its own small interface.
var (
	_ tui.Source    = (*api.Client)(nil)
	_ tui.Biller    = (*api.Client)(nil)
	_ tui.Historian = (*api.Client)(nil)
)

func cmdConsole(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("console", flag.ContinueOnError)
	readOnly := fs.Bool("read-only", false, "watch only: +, -, e and i change nothing")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	return tui.Run(ctx, client(), tui.WithReadOnly(*readOnly))
}

func cmdLogs(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("logs", flag.ContinueOnError)
	follow := fs.Bool("f", false, "follow: keep printing new lines")
	sinceD := fs.Duration("since", 0, "only lines newer than this (e.g. 10m)")
	limit := fs.Int("n", api.DefaultLogLines, fmt.Sprintf("at most this many lines at first (1–%d)", api.MaxLogLines))
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: amber logs NAME [-f] [--since DURATION] [-n N]")
	}
	if *limit < 1 || *limit > api.MaxLogLines {
		return api.Invalid("n", "%d: want 1–%d lines (the most an agent keeps per function)", *limit, api.MaxLogLines)
	}
	var since time.Time
	if *sinceD > 0 {
		since = time.Now().Add(-*sinceD)
	}
	c := client()
	for {
		recs, err := c.Logs(ctx, pos[0], since, *limit)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, r := range recs {
			fmt.Fprintf(stdout, "%s %s/%s %s\n", r.Time.UTC().Format("2006-01-02T15:04:05.000Z"), r.Agent, r.Instance, r.Text)
			since = r.Time
		}
		if !*follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
		*limit = api.MaxLogLines
	}
}

func cmdPool(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pool", flag.ContinueOnError)
	minWarm := fs.Int("min-warm", -1, "instances kept initialised and idle")
	maxN := fs.Int("max", -1, "cap on concurrent instances (0: no cap)")
	keepAlive := fs.Duration("keep-alive", 0, "idle lifetime of instances above min-warm")
	auto := fs.String("auto", "", "on or off: size min-warm from the arrival pattern")
	autoMax := fs.Int("auto-max", -1, "the most auto mode may keep warm")
	output := fs.String("o", "table", "output: table or json")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: amber pool NAME [--min-warm N] [--max N] [--keep-alive DURATION] [--auto on|off] [--auto-max N]")
	}
	var change api.PoolChange
	changed := false
	if *minWarm >= 0 {
		change.MinWarm, changed = minWarm, true
	}
	if *maxN >= 0 {
		change.MaxInstances, changed = maxN, true
	}
	if *keepAlive != 0 {
		ka := api.Duration(*keepAlive)
		change.KeepAlive, changed = &ka, true
	}
	switch *auto {
	case "":
	case "on", "off":
		on := *auto == "on"
		change.Auto, changed = &on, true
	default:
		return api.Invalid("auto", "%q: want on or off", *auto)
	}
	if *autoMax >= 0 {
		change.AutoMax, changed = autoMax, true
	}
	c := client()
	var st *api.PoolStatus
	if changed {
		st, err = c.SetPool(ctx, pos[0], change)
	} else {
		st, err = c.Pool(ctx, pos[0])
	}
	if err != nil {
		return err
	}
	if done, err := emitJSON(stdout, *output, st); done || err != nil {
		return err
	}
	auto2 := "off"
	if st.Auto {
		auto2 = fmt.Sprintf("on (max %d)", st.AutoMax)
	}
	maxS := "no cap"
	if st.MaxInstances > 0 {
		maxS = fmt.Sprint(st.MaxInstances)
	}
	fmt.Fprintf(stdout, "%s: min warm %d (effective %d), max %s, keep-alive %s, auto %s\n",
		st.Function, st.MinWarm, st.EffectiveMinWarm, maxS, st.KeepAlive, auto2)
	r := st.Recommendation
	fmt.Fprintf(stdout, "auto would keep %d warm: %.0f GB-s of warmth per hour, %.1f cold starts avoided per hour (%s)\n",
		r.MinWarm, r.WarmthGBsPerHour, r.ColdStartsAvoidedPerHour, r.Reason)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tMIN WARM\tMAX\tIDLE\tBUSY")
	for _, sh := range st.Shares {
		capS := "-"
		if st.MaxInstances > 0 {
			capS = fmt.Sprint(sh.MaxInstances)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\n", sh.Agent, sh.MinWarm, capS, sh.Idle, sh.Busy)
	}
	return tw.Flush()
}
