package scheduler

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amberfn/amber/api"
)

// HTTP route triggers. A function can be exposed at one route:
//
//	PUT    /v1/functions/{name}/route   body {"path":"/hello","methods":["GET","POST"]} → Route
//	GET    /v1/functions/{name}/route   → Route
//	DELETE /v1/functions/{name}/route   → 204
//	GET    /v1/routes                   → []Route, by path
//
// and is then reachable at /r/<path>: /r/hello, and below it (/r/hello/x,
// the longest matching route wins; a route "/" catches the rest). Route
// requests are public — no token, like a Lambda function URL with auth type
// NONE: the function decides what to serve. The request becomes an API
// Gateway HTTP API event (payload format 2.0) whose rawPath is the path
// after /r, and the function's answer becomes the HTTP response: the
// {statusCode, headers, cookies, body, isBase64Encoded} shape, or any other
// JSON as 200 application/json. Request bodies are capped at 6 MB (413).
//
// A route lives in its function's head key (registry.go), and its path is
// held by a claim key, so deleting the function deletes its route in the
// same step, and two schedulers cannot give one path to two functions.

// RoutePrefix is where route triggers are served.
const RoutePrefix = "/r"

// Route exposes a function at an HTTP path.
type Route struct {
	Function string `json:"function"`
	Path     string `json:"path"`
	// Methods the route answers; empty is any method.
	Methods   []string  `json:"methods,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// RouteSpec is the body of PUT /v1/functions/{name}/route.
type RouteSpec struct {
	Path    string   `json:"path"`
	Methods []string `json:"methods,omitempty"`
}

var (
	routePathRE  = regexp.MustCompile(`^/[A-Za-z0-9._~/-]*$`)
	routeMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true}
)

// normalizeRoute validates a route spec and returns its canonical form:
// the path without a trailing slash, the methods upper-case, unique and
// sorted (empty for any).
func normalizeRoute(spec RouteSpec) (RouteSpec, error) {
	p := spec.Path
	switch {
	case p == "":
		return spec, api.Invalid("path", "required")
	case len(p) > 512:
		return spec, api.Invalid("path", "%d characters; at most 512", len(p))
	case !strings.HasPrefix(p, "/"):
		return spec, api.Invalid("path", "%q must start with /", p)
	case !routePathRE.MatchString(p):
		return spec, api.Invalid("path", "%q: use letters, digits and - . _ ~ /", p)
	case strings.Contains(p, "//"):
		return spec, api.Invalid("path", "%q has an empty segment", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." || strings.Contains(seg, "..") {
			return spec, api.Invalid("path", "%q must not contain . or .. segments", p)
		}
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	seen := map[string]bool{}
	var methods []string
	for _, m := range spec.Methods {
		m = strings.ToUpper(strings.TrimSpace(m))
		if m == "ANY" || m == "*" {
			methods, seen = nil, map[string]bool{"ANY": true}
			break
		}
		if !routeMethods[m] {
			return spec, api.Invalid("methods", "%q: want GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or ANY", m)
		}
		if !seen[m] {
			seen[m] = true
			methods = append(methods, m)
		}
	}
	sort.Strings(methods)
	return RouteSpec{Path: p, Methods: methods}, nil
}

// putRoute stores name's route, refusing a path another live function has.
func (s *Scheduler) putRoute(name string, spec RouteSpec) (*Route, error) {
	spec, err := normalizeRoute(spec)
	if err != nil {
		return nil, err
	}
	rt := &Route{Function: name, Path: spec.Path, Methods: spec.Methods, UpdatedAt: s.now().UTC()}
	if err := s.reg.claimRoute(name, rt.Path); err != nil {
		return nil, err
	}
	_, err = s.reg.updateHead(name, func(h *fnHead) error {
		h.Route = rt
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.reg.releaseRoutes(name)
	return rt, nil
}

// route returns name's route.
func (s *Scheduler) route(name string) (*Route, error) {
	h, _ := s.reg.cache.head(name)
	if h == nil {
		return nil, notFound(name)
	}
	if h.Route == nil {
		return nil, fmt.Errorf("function %q has no route: %w", name, api.ErrNotFound)
	}
	rt := *h.Route
	return &rt, nil
}

// deleteRoute removes name's route.
func (s *Scheduler) deleteRoute(name string) error {
	_, err := s.reg.updateHead(name, func(h *fnHead) error {
		if h.Route == nil {
			return fmt.Errorf("function %q has no route: %w", name, api.ErrNotFound)
		}
		h.Route = nil
		return nil
	})
	if err != nil {
		return err
	}
	s.reg.releaseRoutes(name)
	return nil
}

// routes lists the routes of live functions, by path.
func (s *Scheduler) routes() ([]Route, error) {
	c := &s.reg.cache
	c.mu.RLock()
	out := c.routes
	c.mu.RUnlock()
	if out != nil {
		return out, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out = []Route{}
	for _, h := range c.heads {
		if h.Route != nil {
			out = append(out, *h.Route)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	c.routes = out
	return out, nil
}

// claimRoute makes name the holder of path: creates its claim, or takes
// it over from a function no longer alive; a live other holder is a
// conflict.
func (r *registry) claimRoute(name, path string) error {
	ctx, cancel := r.opCtx()
	defer cancel()
	for range casAttempts {
		h, _, err := r.readHead(ctx, name)
		if err != nil {
			return err
		}
		if h == nil {
			return notFound(name)
		}
		mine, err := json.Marshal(routeClaim{Function: name, Incarnation: h.Incarnation})
		if err != nil {
			return err
		}
		key := claimKey(path)
		e, err := r.kv.Get(ctx, key)
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			rev, err = r.kv.Create(ctx, key, mine)
		case err != nil:
			return storeErr("read route "+path, err)
		default:
			var held routeClaim
			_ = json.Unmarshal(e.Value(), &held)
			if held == (routeClaim{Function: name, Incarnation: h.Incarnation}) {
				return nil
			}
			if held.Function != "" && held.Function != name {
				other, _, err := r.readHead(ctx, held.Function)
				if err != nil {
					return err
				}
				if other != nil && other.Incarnation == held.Incarnation {
					return fmt.Errorf("path %s is the route of function %q: %w", path, held.Function, api.ErrConflict)
				}
			}
			rev, err = r.kv.Update(ctx, key, mine, e.Revision())
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return storeErr("claim route "+path, err)
		}
		r.applyLocal(key, mine, rev)
		return nil
	}
	return fmt.Errorf("claim route %s: still contended after %d attempts: %w", path, casAttempts, api.ErrConflict)
}

// releaseRoutes frees the paths name's live incarnation holds but no
// longer routes (best effort: a path left held is freed by the next
// change of name's route).
func (r *registry) releaseRoutes(name string) {
	h, _ := r.cache.head(name)
	if h == nil {
		return
	}
	type held struct {
		path string
		rev  uint64
	}
	var stale []held
	r.cache.mu.RLock()
	for path, c := range r.cache.claims {
		if c.Function == name && c.Incarnation == h.Incarnation && (h.Route == nil || h.Route.Path != path) {
			stale = append(stale, held{path, c.rev})
		}
	}
	r.cache.mu.RUnlock()
	ctx, cancel := r.opCtx()
	defer cancel()
	for _, c := range stale {
		err := r.kv.Delete(ctx, claimKey(c.path), jetstream.LastRevision(c.rev))
		if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			r.log.Warn("free a route's path", "function", name, "path", c.path, "err", err.Error())
			continue
		}
		if err == nil {
			r.applyLocal(claimKey(c.path), nil, c.rev+1)
		}
	}
}

// matchRoute finds the route serving path: the one with the longest path
// equal to it or a prefix of it at a segment boundary.
func matchRoute(routes []Route, path string) (*Route, bool) {
	var best *Route
	for i := range routes {
		rp := routes[i].Path
		if rp == path || rp == "/" || strings.HasPrefix(path, rp+"/") {
			if best == nil || len(rp) > len(best.Path) {
				best = &routes[i]
			}
		}
	}
	return best, best != nil
}

func (rt *Route) allows(method string) bool {
	if len(rt.Methods) == 0 {
		return true
	}
	for _, m := range rt.Methods {
		if m == method || (m == "GET" && method == http.MethodHead) {
			return true
		}
	}
	return false
}

func (s *Scheduler) handlePutRoute(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name") // valid: validNames checked it
	var spec RouteSpec
	if err := decodeJSON(w, r, 16<<10, &spec); err != nil {
		api.WriteError(w, err)
		return
	}
	rt, err := s.putRoute(name, spec)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	s.log.Info("route set", "function", name, "path", rt.Path, "methods", rt.Methods)
	api.WriteJSON(w, http.StatusOK, rt)
}

func (s *Scheduler) handleGetRoute(w http.ResponseWriter, r *http.Request) {
	rt, err := s.route(r.PathValue("name"))
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, rt)
}

func (s *Scheduler) handleDeleteRoute(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.deleteRoute(name); err != nil {
		api.WriteError(w, err)
		return
	}
	s.log.Info("route removed", "function", name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Scheduler) handleListRoutes(w http.ResponseWriter, _ *http.Request) {
	out, err := s.routes()
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// httpEvent is API Gateway's HTTP API event, payload format 2.0 (the
// shape of aws-lambda-go's events.APIGatewayV2HTTPRequest).
type httpEvent struct {
	Version               string            `json:"version"`
	RouteKey              string            `json:"routeKey"`
	RawPath               string            `json:"rawPath"`
	RawQueryString        string            `json:"rawQueryString"`
	Cookies               []string          `json:"cookies,omitempty"`
	Headers               map[string]string `json:"headers"`
	QueryStringParameters map[string]string `json:"queryStringParameters,omitempty"`
	PathParameters        map[string]string `json:"pathParameters,omitempty"`
	RequestContext        httpEventContext  `json:"requestContext"`
	Body                  string            `json:"body,omitempty"`
	IsBase64Encoded       bool              `json:"isBase64Encoded"`
}

type httpEventContext struct {
	AccountID    string          `json:"accountId"`
	APIID        string          `json:"apiId"`
	DomainName   string          `json:"domainName"`
	DomainPrefix string          `json:"domainPrefix"`
	HTTP         httpEventMethod `json:"http"`
	RequestID    string          `json:"requestId"`
	RouteKey     string          `json:"routeKey"`
	Stage        string          `json:"stage"`
	Time         string          `json:"time"`
	TimeEpoch    int64           `json:"timeEpoch"`
}

type httpEventMethod struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Protocol  string `json:"protocol"`
	SourceIP  string `json:"sourceIp"`
	UserAgent string `json:"userAgent"`
}

// httpResponse is the structured answer of a function behind a route.
type httpResponse struct {
	StatusCode      int               `json:"statusCode"`
	Headers         map[string]string `json:"headers"`
	Cookies         []string          `json:"cookies"`
	Body            string            `json:"body"`
	IsBase64Encoded bool              `json:"isBase64Encoded"`
}

// textual reports whether a body of this content type travels as text.
func textual(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return contentType == ""
	}
	switch {
	case strings.HasPrefix(mt, "text/"),
		mt == "application/json", mt == "application/xml", mt == "application/javascript",
		mt == "application/x-www-form-urlencoded", mt == "application/graphql",
		strings.HasSuffix(mt, "+json"), strings.HasSuffix(mt, "+xml"):
		return true
	}
	return false
}

// buildHTTPEvent turns a route request into an API Gateway 2.0 event. path
// is the request's path below RoutePrefix.
func buildHTTPEvent(r *http.Request, rt *Route, rawPath, path string, body []byte, reqID string, now time.Time) *httpEvent {
	ev := &httpEvent{
		Version: "2.0", RawPath: rawPath, RawQueryString: r.URL.RawQuery,
		Headers: map[string]string{},
	}
	method := "ANY"
	if len(rt.Methods) > 0 {
		method = r.Method
	}
	ev.RouteKey = method + " " + rt.Path
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if lk == "cookie" {
			for _, v := range vs {
				for _, c := range strings.Split(v, ";") {
					if c = strings.TrimSpace(c); c != "" {
						ev.Cookies = append(ev.Cookies, c)
					}
				}
			}
			continue
		}
		ev.Headers[lk] = strings.Join(vs, ",")
	}
	ev.Headers["host"] = r.Host
	if r.ContentLength > 0 {
		ev.Headers["content-length"] = strconv.FormatInt(r.ContentLength, 10)
	}
	if q, err := url.ParseQuery(r.URL.RawQuery); err == nil && len(q) > 0 {
		ev.QueryStringParameters = make(map[string]string, len(q))
		for k, vs := range q {
			ev.QueryStringParameters[k] = strings.Join(vs, ",")
		}
	}
	rest := strings.TrimPrefix(path, "/")
	if rt.Path != "/" {
		rest = strings.TrimPrefix(strings.TrimPrefix(path, rt.Path), "/")
	}
	if rest != "" {
		ev.PathParameters = map[string]string{"proxy": rest}
	}
	if len(body) > 0 {
		if textual(r.Header.Get("Content-Type")) && utf8.Valid(body) {
			ev.Body = string(body)
		} else {
			ev.Body = base64.StdEncoding.EncodeToString(body)
			ev.IsBase64Encoded = true
		}
	}
	ip := r.RemoteAddr
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ip = h
	}
	prefix, _, _ := strings.Cut(r.Host, ".")
	ev.RequestContext = httpEventContext{
		AccountID: lambdaAccount, APIID: "amber", DomainName: r.Host, DomainPrefix: prefix,
		HTTP:      httpEventMethod{Method: r.Method, Path: path, Protocol: r.Proto, SourceIP: ip, UserAgent: r.UserAgent()},
		RequestID: reqID, RouteKey: ev.RouteKey, Stage: "$default",
		Time: now.UTC().Format("02/Jan/2006:15:04:05 -0700"), TimeEpoch: now.UnixMilli(),
	}
	return ev
}

// routeHopHeaders are not taken from a function's response headers.
var routeHopHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true,
	"te": true, "trailer": true, "upgrade": true, "content-length": true,
}

// writeHTTPResponse turns a function's payload into the HTTP response, the
// way API Gateway reads payload format 2.0 answers.
func writeHTTPResponse(w http.ResponseWriter, payload []byte) error {
	var probe map[string]json.RawMessage
	if json.Unmarshal(payload, &probe) != nil || probe["statusCode"] == nil {
		// Any other JSON is the body of a 200.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(payload)
		return nil
	}
	var resp httpResponse
	if err := json.Unmarshal(payload, &resp); err != nil {
		return fmt.Errorf("malformed response: %v", err)
	}
	if resp.StatusCode < 100 || resp.StatusCode > 599 {
		return fmt.Errorf("malformed response: statusCode %d", resp.StatusCode)
	}
	body := []byte(resp.Body)
	if resp.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(resp.Body)
		if err != nil {
			return fmt.Errorf("malformed response: body is not base64: %v", err)
		}
		body = b
	}
	for k, v := range resp.Headers {
		if routeHopHeaders[strings.ToLower(k)] || !validHeader(k, v) {
			continue
		}
		w.Header().Set(k, v)
	}
	for _, c := range resp.Cookies {
		if validHeader("Set-Cookie", c) {
			w.Header().Add("Set-Cookie", c)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
	return nil
}

// validHeader refuses names and values that would break the response.
func validHeader(k, v string) bool {
	if k == "" || strings.ContainsAny(k, " \t\r\n:") {
		return false
	}
	return !strings.ContainsAny(v, "\r\n\x00")
}

func writeRouteError(w http.ResponseWriter, status int, msg string) {
	api.WriteJSON(w, status, map[string]string{"message": msg})
}

// handleRoute serves /r/…: finds the route, invokes its function with an
// API Gateway 2.0 event and answers with what the function returned.
func (s *Scheduler) handleRoute(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, RoutePrefix)
	rawPath := strings.TrimPrefix(r.URL.EscapedPath(), RoutePrefix)
	if path == "" {
		path, rawPath = "/", "/"
	}
	routes, err := s.routes()
	if err != nil {
		s.log.Error("read routes", "err", err.Error())
		writeRouteError(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	rt, ok := matchRoute(routes, path)
	if !ok {
		writeRouteError(w, http.StatusNotFound, "Not Found")
		return
	}
	if !rt.allows(r.Method) {
		w.Header().Set("Allow", strings.Join(rt.Methods, ", "))
		writeRouteError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxSyncPayload))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeRouteError(w, http.StatusRequestEntityTooLarge, "Request Entity Too Large")
			return
		}
		writeRouteError(w, http.StatusBadRequest, "Bad Request")
		return
	}
	fn, err := s.reg.latest(rt.Function)
	if err != nil {
		writeRouteError(w, http.StatusNotFound, "Not Found")
		return
	}
	reqID := s.newRequestID()
	w.Header().Set(api.HeaderRequestID, reqID)
	event, err := json.Marshal(buildHTTPEvent(r, rt, rawPath, path, body, reqID, s.now()))
	if err != nil {
		writeRouteError(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	if len(event) > api.MaxSyncPayload {
		writeRouteError(w, http.StatusRequestEntityTooLarge, "Request Entity Too Large")
		return
	}
	rec := s.invokeCaptured(r.Context(), fn, reqID, event)
	log := s.log.With("function", fn.Name, "route", rt.Path, "request_id", reqID)
	if fe := rec.header.Get(api.HeaderFunctionError); fe != "" {
		// The function failed: the caller learns no more than API Gateway says.
		log.Info("route: function error", "function_error", fe)
		w.Header().Set(api.HeaderFunctionError, fe)
		writeRouteError(w, http.StatusBadGateway, "Internal Server Error")
		return
	}
	if rec.status != http.StatusOK || rec.truncated {
		log.Warn("route: invocation failed", "status", rec.status, "body", clip(rec.body.String(), 512))
		switch rec.status {
		case http.StatusTooManyRequests:
			writeRouteError(w, http.StatusTooManyRequests, "Too Many Requests")
		case http.StatusNotFound:
			writeRouteError(w, http.StatusNotFound, "Not Found")
		case http.StatusGatewayTimeout:
			writeRouteError(w, http.StatusGatewayTimeout, "Gateway Timeout")
		default:
			writeRouteError(w, http.StatusServiceUnavailable, "Service Unavailable")
		}
		return
	}
	if err := writeHTTPResponse(w, rec.body.Bytes()); err != nil {
		log.Warn("route: function answered a malformed response", "err", err.Error())
		writeRouteError(w, http.StatusBadGateway, "Internal Server Error")
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
