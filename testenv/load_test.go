package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amberfn/amber/api"
)

// Load for the reliability tests (soak_test.go, faults_test.go): clients
// invoking a mix of functions, with every invocation accounted for.

// loadFns names the functions a load invokes.
type loadFns struct {
	hello string // examples/hello: sync invocations and async events
	fail  string // a shell function that always returns an error
	slow  string // a shell function that sleeps 200 ms (concurrency, so new instances start)
}

func (l loadFns) sync() []string { return []string{l.hello, l.fail, l.slow} }

// deployLoadFns deploys the load's functions, named prefix-hello …, from
// the hello image and the staged shell example in dir (stage-shell).
func deployLoadFns(t *testing.T, c *api.Client, prefix, helloTar, dir string) loadFns {
	t.Helper()
	l := loadFns{hello: prefix + "-hello", fail: prefix + "-fail", slow: prefix + "-slow"}
	deploy(t, c, l.hello, helloTar)
	deploy(t, c, l.fail, shellImage(t, dir, prefix+"-fail", `handler() { echo "bad input" >&2; return 3; }`))
	deploy(t, c, l.slow, shellImage(t, dir, prefix+"-slow", `handler() { /var/task/busybox usleep 200000; printf '{"slept":true}'; }`))
	return l
}

// shellImage builds the shell example with handler as handler.sh.
func shellImage(t *testing.T, dir, name, handler string) string {
	t.Helper()
	stage := filepath.Join(dir, "stage-"+name)
	os.RemoveAll(stage)
	if err := copyDir(filepath.Join(dir, "stage-shell"), stage); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, "handler.sh"), []byte(handler+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, name+".tar")
	if err := buildArchive(stage, archive); err != nil {
		t.Fatal(err)
	}
	return archive
}

// callTimeout bounds every client call: a call that takes longer is a hang.
const callTimeout = 30 * time.Second

// phaseTally counts the outcomes of one phase of a load.
type phaseTally struct {
	ok, fnErr, platform, unreachable, hung int
	unexpected                             int // function errors from functions that do not fail (or none from the one that does)
	asyncAcked, asyncRefused               int
	agents                                 map[string]int // agent → successful sync invocations
	errs                                   map[string]int // error text (ids blanked) → count
}

// load runs clients until stopped and accounts for every call.
type load struct {
	c     *api.Client
	hc    *http.Client
	fns   loadFns
	phase atomic.Value // string

	mu       sync.Mutex
	phases   map[string]*phaseTally
	order    []string
	answered map[string]bool // request ids of sync calls the agent ran and answered (ok or function error)
	failedID map[string]bool // request ids named by platform errors
	events   map[string]bool // acknowledged async event ids
	hangs    []string
	// cutOff counts sync calls whose answer was lost on the way: a load
	// balancer in front answered 502 or 504 (the scheduler died or stopped
	// answering), or the connection broke. The function may have run (or
	// failed on the platform), and its ledger record then matches no
	// answer the client got.
	cutOff int

	stop chan struct{}
	wg   sync.WaitGroup
}

// newLoad returns a load against the scheduler at url; its HTTP client has
// its own transport, so the connections it leaves can be closed.
func newLoad(url, token string, fns loadFns) *load {
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	l := &load{
		c: api.NewClient(url, api.WithToken(token), api.WithHTTPClient(hc)), hc: hc, fns: fns,
		phases: map[string]*phaseTally{}, answered: map[string]bool{}, failedID: map[string]bool{}, events: map[string]bool{},
		stop: make(chan struct{}),
	}
	l.setPhase("start")
	return l
}

func (l *load) setPhase(p string) {
	l.mu.Lock()
	if l.phases[p] == nil {
		l.phases[p] = &phaseTally{agents: map[string]int{}, errs: map[string]int{}}
		l.order = append(l.order, p)
	}
	l.mu.Unlock()
	l.phase.Store(p)
}

// start runs n clients. Each call is one of: a sync invoke of hello (55%),
// of the failing function (15%), of the slow one (15%), or an async event
// to hello (15%).
func (l *load) start(n int) {
	for i := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for seq := 0; ; seq++ {
				select {
				case <-l.stop:
					return
				default:
				}
				l.one(r.IntN(100), fmt.Sprintf(`{"name":"c%d-%d"}`, i, seq))
				time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
			}
		}()
	}
}

// halt stops the clients and waits for their calls in flight.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.hc.CloseIdleConnections()
}

var idRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z0-9-]+-[0-9a-f]{12}|127\.0\.0\.1:[0-9]+|[0-9.]+(ms|s|µs)\b`)
var reqRE = regexp.MustCompile(`request ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})`)

func (l *load) one(dice int, payload string) {
	if dice >= 85 {
		l.asyncCall(payload)
		return
	}
	fn := l.fns.hello
	switch {
	case dice >= 70:
		fn = l.fns.fail
	case dice >= 55:
		fn = l.fns.slow
	}
	l.syncCall(fn, payload)
}

// tallyFor is the tally a call that started in phase start is counted in:
// that phase, or "start→now" when the phase changed while it ran.
// Called with l.mu held.
func (l *load) tallyFor(start string) *phaseTally {
	p := start
	if now := l.phase.Load().(string); now != start {
		p = start + "→" + now
	}
	if l.phases[p] == nil {
		l.phases[p] = &phaseTally{agents: map[string]int{}, errs: map[string]int{}}
		l.order = append(l.order, p)
	}
	return l.phases[p]
}

func (l *load) asyncCall(payload string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	phase := l.phase.Load().(string)
	start := time.Now()
	id, err := l.c.InvokeAsync(ctx, l.fns.hello, []byte(payload))
	l.mu.Lock()
	defer l.mu.Unlock()
	pt := l.tallyFor(phase)
	if err == nil {
		pt.asyncAcked++
		l.events[id] = true
		return
	}
	pt.asyncRefused++
	l.classify(pt, ctx, err, "event "+l.fns.hello, start)
}

// syncCall invokes fn and accounts for the outcome.
func (l *load) syncCall(fn, payload string) (*api.InvokeResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	phase := l.phase.Load().(string)
	start := time.Now()
	res, err := l.c.Invoke(ctx, fn, []byte(payload))
	l.mu.Lock()
	defer l.mu.Unlock()
	pt := l.tallyFor(phase)
	if err != nil {
		l.classify(pt, ctx, err, "invoke "+fn, start)
		return nil, err
	}
	l.answered[res.RequestID] = true
	wantErr := fn == l.fns.fail
	switch {
	case res.FunctionError != "" && wantErr:
		pt.fnErr++
	case res.FunctionError == "" && !wantErr:
		pt.ok++
		pt.agents[res.Agent]++
	default:
		// A function error where none belongs (or none where one does):
		// counted as answered, reported as an error.
		pt.fnErr++
		pt.unexpected++
		pt.errs[fmt.Sprintf("%s: unexpected result %s: %s", fn, res.FunctionError, idRE.ReplaceAllString(string(res.Payload), "…"))]++
	}
	return res, nil
}

// classify counts a failed call: a platform error with a message, the
// scheduler unreachable, or a hang (the call timed out).
func (l *load) classify(pt *phaseTally, ctx context.Context, err error, what string, start time.Time) {
	var se *api.StatusError
	switch {
	case ctx.Err() != nil:
		pt.hung++
		l.hangs = append(l.hangs, fmt.Sprintf("%s: no answer within %s (%v)", what, time.Since(start).Round(time.Millisecond), err))
		return
	case errors.As(err, &se):
		pt.platform++
		if (se.Status == http.StatusGatewayTimeout && strings.Contains(se.Message, "Gateway Time-out")) ||
			(se.Status == http.StatusBadGateway && strings.Contains(se.Message, "Bad Gateway</h1>")) {
			l.cutOff++ // the load balancer's own answer
		}
		if m := reqRE.FindStringSubmatch(se.Message); m != nil {
			l.failedID[m[1]] = true
		}
		msg := se.Message
		if strings.TrimSpace(msg) == "" {
			msg = "(an HTTP error without a message)"
		}
		pt.errs[fmt.Sprintf("%s: %d %s", what, se.Status, idRE.ReplaceAllString(msg, "…"))]++
	default:
		pt.unreachable++
		l.cutOff++
		pt.errs[fmt.Sprintf("%s: transport: %s", what, idRE.ReplaceAllString(err.Error(), "…"))]++
	}
}

// tally returns the phase's counts (a copy).
func (l *load) tally(phase string) phaseTally {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pt := l.phases[phase]; pt != nil {
		return *pt
	}
	return phaseTally{}
}

// report logs every phase's counts and error texts.
func (l *load) report(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.order {
		pt := l.phases[p]
		t.Logf("phase %-10s ok %d, function errors %d (unexpected %d), platform errors %d, scheduler unreachable %d, hung %d; events acked %d, refused %d; ok by agent %v",
			p, pt.ok, pt.fnErr, pt.unexpected, pt.platform, pt.unreachable, pt.hung, pt.asyncAcked, pt.asyncRefused, pt.agents)
		var keys []string
		for k := range pt.errs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.Logf("    %4d × %s", pt.errs[k], k)
		}
	}
	for _, h := range l.hangs {
		t.Errorf("hang: %s", h)
	}
}

// totals sums every phase.
func (l *load) totals() phaseTally {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s phaseTally
	for _, pt := range l.phases {
		s.ok += pt.ok
		s.fnErr += pt.fnErr
		s.platform += pt.platform
		s.unreachable += pt.unreachable
		s.hung += pt.hung
		s.unexpected += pt.unexpected
		s.asyncAcked += pt.asyncAcked
		s.asyncRefused += pt.asyncRefused
	}
	return s
}

// checkAccounts waits for the async queue of hello to empty, then checks
// the ledger against the client's counts: the sync records the agents
// answered (a start kind) are exactly the client's successes and function
// errors; records without a start kind (platform failures the scheduler
// logs) name only requests the client saw fail; every acknowledged event
// was delivered (a ledger record of source "event") or is in the
// dead-letter list with each attempt's error.
func (l *load) checkAccounts(t *testing.T, since time.Time, pendingWait time.Duration) {
	t.Helper()
	ctx := t.Context()
	c := l.c
	deadline := time.Now().Add(pendingWait)
	for {
		st, err := c.Async(ctx, l.fns.hello)
		if err == nil && st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("async events of %s still pending %s after the load stopped: %+v %v", l.fns.hello, pendingWait, st, err)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	l.mu.Lock()
	answered, failedID, events := l.answered, l.failedID, l.events
	l.mu.Unlock()

	inLedger := map[string]bool{}
	platformRecs, eventOK, eventOther := 0, 0, 0
	var extra []string
	for _, fn := range l.fns.sync() {
		// Right after a fault, a read can find the store still electing
		// (503 naming it): ask again, as an operator's tool would.
		var recs []api.LedgerRecord
		var err error
		for deadline := time.Now().Add(30 * time.Second); ; {
			recs, err = c.Ledger(ctx, fn, since, 100000)
			var se *api.StatusError
			if err == nil || !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("ledger of %s: %v", fn, err)
		}
		for _, r := range recs {
			switch {
			case r.Source == "event" && r.StartKind != "" && !r.Error:
				eventOK++
			case r.Source == "event":
				eventOther++
			case r.StartKind == "":
				platformRecs++
				if !failedID[r.RequestID] {
					extra = append(extra, fmt.Sprintf("%s %s (platform failure the client did not see)", fn, r.RequestID))
				}
			default:
				if inLedger[r.RequestID] {
					extra = append(extra, fmt.Sprintf("%s %s (twice)", fn, r.RequestID))
				}
				inLedger[r.RequestID] = true
				if !answered[r.RequestID] {
					extra = append(extra, fmt.Sprintf("%s %s (%s, error %v: not an answer the client got)", fn, r.RequestID, r.StartKind, r.Error))
				}
			}
		}
	}
	var missing []string
	for id := range answered {
		if !inLedger[id] {
			missing = append(missing, id)
		}
	}
	tot := l.totals()
	t.Logf("ledger: %d answered sync records for %d client successes + function errors; %d platform-failure records (client saw %d platform errors); %d delivered event records, %d failed event attempts",
		len(inLedger), tot.ok+tot.fnErr, platformRecs, tot.platform, eventOK, eventOther)
	if len(missing) > 0 {
		t.Errorf("%d invocations the client got an answer for have no ledger record: %v", len(missing), first(missing, 10))
	}
	ran := 0 // records of calls that ran but whose answer the client did not get
	for _, e := range extra {
		if strings.HasSuffix(e, "not an answer the client got)") {
			ran++
		}
	}
	switch {
	case len(extra) > 0 && len(extra) <= l.cutOff:
		t.Logf("%d ledger records of calls whose answer was lost on the way (%d calls got a load balancer's 502/504 or a broken connection): %v", len(extra), l.cutOff, first(extra, 10))
	case len(extra) > 0:
		t.Errorf("%d ledger records match no client answer: %v", len(extra), first(extra, 10))
	}
	if len(inLedger) != tot.ok+tot.fnErr+ran && len(inLedger) != tot.ok+tot.fnErr {
		t.Errorf("ledger holds %d answered sync records, the clients counted %d successes + function errors", len(inLedger), tot.ok+tot.fnErr)
	}

	dl, err := c.DeadLetters(ctx, l.fns.hello)
	if err != nil {
		t.Fatalf("dead letters: %v", err)
	}
	dead := 0
	for _, d := range dl {
		if d.EnqueuedAt.Before(since) {
			continue
		}
		if !events[d.EventID] {
			t.Errorf("dead letter %s is not an event the clients queued", d.EventID)
			continue
		}
		dead++
		for i, a := range d.Attempts {
			if strings.TrimSpace(a.Error) == "" {
				t.Errorf("dead letter %s: attempt %d has no error", d.EventID, i+1)
			}
		}
		t.Logf("dead letter %s after %d attempts; last: %s", d.EventID, len(d.Attempts), d.Attempts[len(d.Attempts)-1].Error)
	}
	delivered := len(events) - dead
	t.Logf("async: %d events acknowledged, %d dead-lettered, %d delivery records in the ledger (at least once: %d duplicates)", len(events), dead, eventOK, eventOK-delivered)
	if eventOK < delivered {
		t.Errorf("%d acknowledged events were neither delivered (%d ledger records) nor dead-lettered (%d)", delivered-eventOK, eventOK, dead)
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
