package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Client talks to the scheduler's HTTP API. It is used by the CLI, the
// console and the agent; it is safe for concurrent use.
//
// A client may know several schedulers of one control plane. It sends
// to the one that answered last and moves to the next (see send) when
// that one cannot be reached.
type Client struct {
	bases []string
	cur   atomic.Int32 // index in bases of the scheduler that answered last
	token string
	hc    *http.Client
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithToken makes the client send "Authorization: Bearer TOKEN". An empty
// token sends no header.
func WithToken(token string) ClientOption { return func(c *Client) { c.token = token } }

// WithHTTPClient sets the http.Client requests go through (default
// http.DefaultClient).
func WithHTTPClient(h *http.Client) ClientOption {
	return func(c *Client) {
		if h != nil {
			c.hc = h
		}
	}
}

// NewClient returns a client for the scheduler at baseURL
// ("http://127.0.0.1:7700"), or for several schedulers given
// comma-separated ("http://a:7700,http://b:7700"); trailing slashes and
// spaces around the commas are ignored.
func NewClient(baseURL string, opts ...ClientOption) *Client {
	c := &Client{bases: SplitURLs(baseURL), hc: defaultHTTPClient}
	if len(c.bases) == 0 {
		c.bases = []string{""}
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// SplitURLs splits a comma-separated list of scheduler URLs, trimming
// spaces and trailing slashes and dropping empty entries.
func SplitURLs(list string) []string {
	var out []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// BaseURLs returns the schedulers the client knows, in the order given.
func (c *Client) BaseURLs() []string { return slices.Clone(c.bases) }

// defaultHTTPClient keeps enough idle connections for a client shared by
// many goroutines (http.DefaultTransport keeps 2 per host, so concurrent
// callers would dial and close a connection per request).
var defaultHTTPClient = &http.Client{Transport: NewTransport()}

// NewTransport is http.DefaultTransport with room for maxIdleConnsPerHost
// idle connections to each host: amber's clients (the CLI, the console,
// the scheduler calling agents) send many concurrent requests to few hosts.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 0 // no overall cap; per host below
	t.MaxIdleConnsPerHost = maxIdleConnsPerHost
	// Shorter than a server's DefaultIdleTimeout: the client drops an idle
	// connection before the server closes it, so a request is never sent
	// on a connection that is being closed (a POST would not be retried).
	t.IdleConnTimeout = clientIdleTimeout
	return t
}

// maxIdleConnsPerHost is how many idle keep-alive connections NewTransport
// keeps to one host.
const maxIdleConnsPerHost = 256

// clientIdleTimeout is how long NewTransport keeps an idle connection.
const clientIdleTimeout = DefaultIdleTimeout / 2

// StatusError is the error a client method returns for a non-2xx reply. It
// unwraps to the sentinel for its status (ErrNotFound, ErrInvalid …), so
// callers test it with errors.Is.
type StatusError struct {
	Status  int    // the HTTP status
	Code    string // ErrorDetail.Code, when the server sent an ErrorBody
	Message string // the server's message (or the body's first bytes)
	Field   string // the offending input field, if any
	err     error
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Field != "" && !strings.HasPrefix(msg, e.Field+":") {
		msg = e.Field + ": " + msg
	}
	return msg
}

// Unwrap returns the sentinel for the status.
func (e *StatusError) Unwrap() error { return e.err }

// maxErrorBody bounds how much of an error reply is read.
const maxErrorBody = 64 << 10

func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &StatusError{Status: resp.StatusCode, err: SentinelFor(resp.StatusCode)}
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error.Message != "" {
		e.Code, e.Message, e.Field = eb.Error.Code, eb.Error.Message, eb.Error.Field
	} else {
		e.Message = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return e
}

// call is one request to the scheduler.
type call struct {
	method, path string
	body         io.Reader // nil: none
	header       http.Header
	// idempotent: the request may be repeated on another scheduler even
	// when the first may have received it (a read, a deploy of the same
	// spec, a heartbeat, a content-addressed upload).
	idempotent bool
}

// do sends a request and returns the response when its status is 2xx; for
// any other status it reads the ErrorBody and returns a *StatusError.
// GET, HEAD, PUT and DELETE are idempotent (see send); POST is not.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return c.send(ctx, call{method: method, path: path, body: body, header: h, idempotent: method != http.MethodPost})
}

// send sends cl to the scheduler that answered last and, when the client
// knows several, moves on to the next one:
//
//   - on a connection that could not be made (refused, no route, DNS), for
//     every request: the scheduler never saw it;
//   - for idempotent requests, also on any other transport error and on
//     any 5xx answer (503 when a scheduler's store has lost its quorum).
//
// A non-idempotent request (an invocation, a drain) that reached a
// scheduler is not repeated: its 5xx, 503 included, is the caller's
// answer, since the scheduler may have acted on it (an invocation that
// ran and then failed to be recorded). A 4xx is always the answer. A body
// that is not seekable is repeated only when none of it was sent yet.
// The reply is returned when its status is 2xx, else a *StatusError; when
// every scheduler failed the error names each attempt.
func (c *Client) send(ctx context.Context, cl call) (*http.Response, error) {
	n := len(c.bases)
	start := int(c.cur.Load())
	var (
		seeker io.Seeker
		offset int64
		count  *countingReader
	)
	switch b := cl.body.(type) {
	case nil:
	case io.ReadSeeker:
		seeker = b
		var err error
		if offset, err = b.Seek(0, io.SeekCurrent); err != nil {
			seeker = nil
			count = &countingReader{r: b}
		}
	default:
		count = &countingReader{r: b}
	}
	var errs []error
	for i := range n {
		idx := (start + i) % n
		var (
			body   io.Reader
			length int64 = -1
		)
		switch {
		case seeker != nil:
			end, err := seeker.Seek(0, io.SeekEnd)
			if err == nil {
				_, err = seeker.Seek(offset, io.SeekStart)
			}
			if err != nil {
				return nil, c.failed(errs, fmt.Errorf("%s %s: rewind the body: %w", cl.method, cl.path, err))
			}
			length = end - offset
			body = cl.body
			if _, ok := cl.body.(*bytes.Reader); !ok {
				body = io.NopCloser(cl.body) // the transport must not close what we rewind
			}
		case count != nil:
			if count.n > 0 {
				return nil, c.failed(errs, nil)
			}
			body = io.NopCloser(count)
		}
		req, err := http.NewRequestWithContext(ctx, cl.method, c.bases[idx]+cl.path, body)
		if err != nil {
			return nil, err
		}
		if length == 0 {
			req.Body, req.GetBody = http.NoBody, nil
		}
		if length >= 0 {
			req.ContentLength = length
		}
		for k, vs := range cl.header {
			req.Header[k] = vs
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.hc.Do(req)
		last := i == n-1
		if err != nil {
			err = fmt.Errorf("%s %s: %w", cl.method, cl.path, err)
			if ctx.Err() != nil || last || !(notSent(err) || cl.idempotent) {
				return nil, c.failed(errs, err)
			}
			errs = append(errs, err)
			continue
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			serr := statusError(resp)
			resp.Body.Close()
			if resp.StatusCode >= 500 && cl.idempotent && !last {
				errs = append(errs, fmt.Errorf("%s %s at %s: %w", cl.method, cl.path, c.bases[idx], serr))
				continue
			}
			c.cur.Store(int32(idx))
			return nil, c.failed(errs, serr)
		}
		c.cur.Store(int32(idx))
		return resp, nil
	}
	return nil, c.failed(errs, nil)
}

// failed is the error after every scheduler tried failed: last alone
// when it was the only attempt, else every attempt's.
func (c *Client) failed(earlier []error, last error) error {
	if last != nil {
		earlier = append(earlier, last)
	}
	if len(earlier) == 1 {
		return earlier[0]
	}
	return &failoverError{errs: earlier}
}

// failoverError lists what each scheduler answered; errors.Is and As see
// every one.
type failoverError struct{ errs []error }

func (e *failoverError) Error() string {
	parts := make([]string, len(e.errs))
	for i, err := range e.errs {
		parts[i] = err.Error()
	}
	return fmt.Sprintf("no scheduler answered (%d tried): %s", len(e.errs), strings.Join(parts, "; "))
}

func (e *failoverError) Unwrap() []error { return e.errs }

// notSent reports whether err means the request never reached a server:
// the connection could not be made.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// doJSON sends in (when not nil) as JSON and decodes a 2xx reply into out
// (when not nil).
func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	return c.callJSON(ctx, method, path, method != http.MethodPost, in, out)
}

// callJSON is doJSON saying whether the request is idempotent (see send).
func (c *Client) callJSON(ctx context.Context, method, path string, idempotent bool, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	h := http.Header{}
	if ct != "" {
		h.Set("Content-Type", ct)
	}
	resp, err := c.send(ctx, call{method: method, path: path, body: body, header: h, idempotent: idempotent})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode reply: %w", method, path, err)
	}
	return nil
}

func fnPath(name string) string { return "/v1/functions/" + url.PathEscape(name) }

// ImageUpload is the scheduler's reply to an image upload.
type ImageUpload struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// UploadImage stores an OCI image archive (a tar) in the scheduler and
// returns its digest, "sha256:<hex>" of the whole archive.
func (c *Client) UploadImage(ctx context.Context, r io.Reader) (string, error) {
	// Images are named by their digest: an upload repeated on another
	// scheduler stores the same archive.
	h := http.Header{}
	h.Set("Content-Type", "application/x-tar")
	resp, err := c.send(ctx, call{method: http.MethodPost, path: "/v1/images", body: r, header: h, idempotent: true})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var up ImageUpload
	if err := json.NewDecoder(resp.Body).Decode(&up); err != nil {
		return "", fmt.Errorf("upload image: decode reply: %w", err)
	}
	if err := ValidateDigest("digest", up.Digest); err != nil {
		return "", fmt.Errorf("upload image: scheduler replied with a bad digest: %w", err)
	}
	return up.Digest, nil
}

// FetchImage streams the image archive with the given digest. The caller
// closes the reader.
func (c *Client) FetchImage(ctx context.Context, digest string) (io.ReadCloser, error) {
	if err := ValidateDigest("digest", digest); err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/images/"+digest, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ResolveImage asks the scheduler to resolve a registry reference to the
// linux/amd64 manifest it would pin. POST /v1/images/resolve
func (c *Client) ResolveImage(ctx context.Context, ref string) (*ResolvedImage, error) {
	var out ResolvedImage
	if err := c.doJSON(ctx, http.MethodPost, "/v1/images/resolve", ResolveRequest{Image: ref}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Deploy registers spec as the function's newest version and returns it.
// Deploying a spec identical to the latest version returns that version.
func (c *Client) Deploy(ctx context.Context, spec FunctionSpec) (*Function, error) {
	if err := ValidateName("name", spec.Name); err != nil {
		return nil, err
	}
	var fn Function
	if err := c.doJSON(ctx, http.MethodPut, fnPath(spec.Name), spec, &fn); err != nil {
		return nil, err
	}
	return &fn, nil
}

// DeployWithProgress is Deploy asking for a streamed reply: for a
// registry reference the scheduler has an agent pull the image first and
// progress (when not nil) sees each line of that pull. A failed pull is a
// *StatusError naming the reference; the earlier version keeps serving.
func (c *Client) DeployWithProgress(ctx context.Context, spec FunctionSpec, progress func(DeployProgress)) (*Function, error) {
	if err := ValidateName("name", spec.Name); err != nil {
		return nil, err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	path := fnPath(spec.Name)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Accept", ContentTypeNDJSON+", application/json")
	resp, err := c.send(ctx, call{method: http.MethodPut, path: path, body: bytes.NewReader(b), header: h, idempotent: true})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), ContentTypeNDJSON) {
		var fn Function
		if err := json.NewDecoder(resp.Body).Decode(&fn); err != nil {
			return nil, fmt.Errorf("PUT %s: decode reply: %w", path, err)
		}
		return &fn, nil
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l DeployProgress
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("PUT %s: bad progress line %q: %w", path, sc.Text(), err)
		}
		switch {
		case l.Failure != nil:
			return nil, &StatusError{Status: l.HTTPCode, err: SentinelFor(l.HTTPCode),
				Code: l.Failure.Code, Message: l.Failure.Message, Field: l.Failure.Field}
		case l.Function != nil:
			return l.Function, nil
		case progress != nil:
			progress(l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("PUT %s: %w", path, err)
	}
	return nil, fmt.Errorf("PUT %s: the deploy stream ended without an outcome: %w", path, ErrUnavailable)
}

// Functions lists every function's latest version with its instances and
// counters, sorted by name.
func (c *Client) Functions(ctx context.Context) ([]FunctionStatus, error) {
	var out []FunctionStatus
	if err := c.doJSON(ctx, http.MethodGet, "/v1/functions", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Function returns one function's latest version with its instances and
// counters.
func (c *Client) Function(ctx context.Context, name string) (*FunctionStatus, error) {
	var out FunctionStatus
	if err := c.doJSON(ctx, http.MethodGet, fnPath(name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// FunctionVersions returns every kept version of a function, oldest first.
func (c *Client) FunctionVersions(ctx context.Context, name string) ([]Function, error) {
	var out []Function
	if err := c.doJSON(ctx, http.MethodGet, fnPath(name)+"/versions", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// FunctionVersion returns one deployed version of a function.
func (c *Client) FunctionVersion(ctx context.Context, name string, version int) (*Function, error) {
	var out Function
	if err := c.doJSON(ctx, http.MethodGet, fnPath(name)+"/versions/"+strconv.Itoa(version), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteFunction removes a function and all its versions.
func (c *Client) DeleteFunction(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, fnPath(name), nil, nil)
}

// Invoke runs the function's latest version synchronously with payload.
// A function error is not a Go error: the result's FunctionError is set and
// its Payload holds the FunctionError JSON. Platform failures (unknown
// function, no agent, agent down …) are returned as errors.
func (c *Client) Invoke(ctx context.Context, name string, payload []byte) (*InvokeResult, error) {
	resp, err := c.do(ctx, http.MethodPost, fnPath(name)+"/invoke", bytes.NewReader(payload), "application/json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// Lambda caps responses at MaxSyncPayload; allow some slack for error JSON.
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxSyncPayload+64<<10))
	if err != nil {
		return nil, fmt.Errorf("invoke %s: read response: %w", name, err)
	}
	return ReadInvokeHeaders(resp.Header, body), nil
}

// Heartbeat registers the agent or refreshes its entry.
func (c *Client) Heartbeat(ctx context.Context, hb Heartbeat) (*HeartbeatReply, error) {
	var out HeartbeatReply
	// A heartbeat repeated on another scheduler does no harm.
	if err := c.callJSON(ctx, http.MethodPost, "/v1/agents/heartbeat", true, hb, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Pool returns a function's pool settings, shares and auto-mode
// recommendation. GET /v1/functions/{name}/pool
func (c *Client) Pool(ctx context.Context, name string) (*PoolStatus, error) {
	var out PoolStatus
	if err := c.doJSON(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name)+"/pool", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetPool changes some of a function's pool settings and returns the pool
// as the scheduler confirmed it. PUT /v1/functions/{name}/pool
func (c *Client) SetPool(ctx context.Context, name string, change PoolChange) (*PoolStatus, error) {
	var out PoolStatus
	if err := c.doJSON(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(name)+"/pool", change, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Agents lists the agents the scheduler knows, sorted by name.
func (c *Client) Agents(ctx context.Context) ([]AgentStatus, error) {
	var out []AgentStatus
	if err := c.doJSON(ctx, http.MethodGet, "/v1/agents", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// State returns the whole cluster picture the console draws.
func (c *Client) State(ctx context.Context) (*ClusterState, error) {
	var out ClusterState
	if err := c.doJSON(ctx, http.MethodGet, "/v1/state", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Logs returns up to limit of a function's most recent log records after
// since (zero: from the oldest kept), gathered from every agent, oldest
// first. GET /v1/functions/{name}/logs
func (c *Client) Logs(ctx context.Context, name string, since time.Time, limit int) ([]LogRecord, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []LogRecord
	if err := c.doJSON(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name)+"/logs?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Events returns the scheduler's recent events after seq, oldest first.
// GET /v1/events
func (c *Client) Events(ctx context.Context, since int64) ([]Event, error) {
	var out []Event
	if err := c.doJSON(ctx, http.MethodGet, "/v1/events?since="+strconv.FormatInt(since, 10), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Stream follows the scheduler's event stream (GET /v1/stream, server-sent
// events) and sends each message on the returned channel until ctx ends or
// the connection breaks; the channel is closed then.
func (c *Client) Stream(ctx context.Context, since int64) (<-chan StreamMessage, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/stream?since="+strconv.FormatInt(since, 10), nil, "")
	if err != nil {
		return nil, err
	}
	out := make(chan StreamMessage, 4)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var m StreamMessage
			if json.Unmarshal([]byte(data), &m) != nil {
				continue
			}
			select {
			case out <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// InvokeAsync queues an asynchronous (Event) invocation of the function's
// latest version and returns its event id.
func (c *Client) InvokeAsync(ctx context.Context, name string, payload []byte) (string, error) {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderInvocationType, "Event")
	resp, err := c.send(ctx, call{method: http.MethodPost, path: fnPath(name) + "/invoke", body: bytes.NewReader(payload), header: h})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("invoke %s: status %d, want 202", name, resp.StatusCode)
	}
	var acc AsyncAccepted
	if err := json.NewDecoder(resp.Body).Decode(&acc); err != nil {
		return "", fmt.Errorf("invoke %s: decode reply: %w", name, err)
	}
	return acc.EventID, nil
}

// Async returns a function's async setting and queue figures.
func (c *Client) Async(ctx context.Context, name string) (*AsyncStatus, error) {
	var out AsyncStatus
	if err := c.doJSON(ctx, http.MethodGet, fnPath(name)+"/async", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetAsync changes a function's async setting (max_retries).
func (c *Client) SetAsync(ctx context.Context, name string, cfg AsyncConfig) (*AsyncStatus, error) {
	var out AsyncStatus
	if err := c.doJSON(ctx, http.MethodPut, fnPath(name)+"/async", cfg, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeadLetters lists the events that failed every attempt, oldest first;
// name "" lists every function's.
func (c *Client) DeadLetters(ctx context.Context, name string) ([]DeadLetter, error) {
	path := "/v1/dead-letters"
	if name != "" {
		path = fnPath(name) + "/dead-letters"
	}
	var out []DeadLetter
	if err := c.doJSON(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// SetSchedule sets a function's cron trigger: a 5-field cron expression
// ("*/5 * * * *", UTC) or a rate ("rate(5 minutes)").
func (c *Client) SetSchedule(ctx context.Context, name, expression string) (*Schedule, error) {
	var out Schedule
	if err := c.doJSON(ctx, http.MethodPut, fnPath(name)+"/schedule", map[string]string{"expression": expression}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteSchedule removes a function's cron trigger.
func (c *Client) DeleteSchedule(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, fnPath(name)+"/schedule", nil, nil)
}

// Schedules lists every cron trigger.
func (c *Client) Schedules(ctx context.Context) ([]Schedule, error) {
	var out []Schedule
	if err := c.doJSON(ctx, http.MethodGet, "/v1/schedules", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Bill aggregates the ledger over [since, until) (zero: the last 24 hours,
// up to now) per function, and per "hour" or "day" when by is set.
func (c *Client) Bill(ctx context.Context, since, until time.Time, by string) (*Bill, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339))
	}
	if !until.IsZero() {
		q.Set("until", until.UTC().Format(time.RFC3339))
	}
	if by != "" {
		q.Set("by", by)
	}
	var out Bill
	if err := c.doJSON(ctx, http.MethodGet, "/v1/bill?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Ledger lists raw ledger records from since (oldest first, at most
// limit; 0 is the server's default); function "" is every function.
func (c *Client) Ledger(ctx context.Context, function string, since time.Time, limit int) ([]LedgerRecord, error) {
	q := url.Values{}
	if function != "" {
		q.Set("function", function)
	}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []LedgerRecord
	if err := c.doJSON(ctx, http.MethodGet, "/v1/ledger?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Drain stops new placements on an agent (on=true) or resumes them;
// invocations in flight finish. POST/DELETE /v1/agents/{name}/drain
func (c *Client) Drain(ctx context.Context, agent string, on bool) error {
	method := http.MethodDelete
	if on {
		method = http.MethodPost
	}
	return c.doJSON(ctx, method, "/v1/agents/"+url.PathEscape(agent)+"/drain", nil, nil)
}

// History returns per-minute counters and latency histograms from since
// (the scheduler keeps 24 hours), with the cumulative figures read at the
// same instant; function "" is every function.
func (c *Client) History(ctx context.Context, since time.Time, function string) (*History, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339))
	}
	if function != "" {
		q.Set("function", function)
	}
	var out History
	if err := c.doJSON(ctx, http.MethodGet, "/v1/history?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ControlPlane returns the scheduler's view of the engine under the
// control plane (NATS JetStream): meta leader, peers, streams. GET
// /v1/cluster
func (c *Client) ControlPlane(ctx context.Context) (*ControlPlane, error) {
	var out ControlPlane
	if err := c.doJSON(ctx, http.MethodGet, "/v1/cluster", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
