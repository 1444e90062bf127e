package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to the scheduler's HTTP API. It is used by the CLI, the
// console and the agent; it is safe for concurrent use.
type Client struct {
	base  string
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
// ("http://127.0.0.1:7700"); a trailing slash is ignored.
func NewClient(baseURL string, opts ...ClientOption) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: defaultHTTPClient}
	for _, o := range opts {
		o(c)
	}
	return c
}

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

// do sends a request and returns the response when its status is 2xx; for
// any other status it reads the ErrorBody and returns a *StatusError.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, statusError(resp)
	}
	return resp, nil
}

// doJSON sends in (when not nil) as JSON and decodes a 2xx reply into out
// (when not nil).
func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, body, ct)
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
	resp, err := c.do(ctx, http.MethodPost, "/v1/images", r, "application/x-tar")
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", ContentTypeNDJSON+", application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("PUT %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, statusError(resp)
	}
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
	if err := c.doJSON(ctx, http.MethodPost, "/v1/agents/heartbeat", hb, &out); err != nil {
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+fnPath(name)+"/invoke", bytes.NewReader(payload))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderInvocationType, "Event")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("invoke %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return "", fmt.Errorf("invoke %s: status %d, want 202", name, resp.StatusCode)
		}
		return "", statusError(resp)
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
