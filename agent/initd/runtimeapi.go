package initd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amberfn/amber/api"
)

// apiPrefix is the path every Runtime API endpoint starts with.
const apiPrefix = "/2018-06-01/runtime/"

// Lambda Runtime API headers and trailers.
const (
	hdrRequestID       = "Lambda-Runtime-Aws-Request-Id"
	hdrDeadlineMs      = "Lambda-Runtime-Deadline-Ms"
	hdrFunctionARN     = "Lambda-Runtime-Invoked-Function-Arn"
	hdrTraceID         = "Lambda-Runtime-Trace-Id"
	hdrClientContext   = "Lambda-Runtime-Client-Context"
	hdrCognitoIdentity = "Lambda-Runtime-Cognito-Identity"
	hdrErrorType       = "Lambda-Runtime-Function-Error-Type"
	trlErrorBody       = "Lambda-Runtime-Function-Error-Body"
)

// Lambda error types used in Runtime API replies and in error frames.
const (
	errTypeInvalidState   = "InvalidStateTransition"
	errTypeInvalidID      = "InvalidRequestID"
	errTypeTooLarge       = "RequestEntityTooLarge"
	errTypeNotFound       = "NotFound"
	errTypeMethod         = "MethodNotAllowed"
	errTypeBadBody        = "InvalidRequestBody"
	errTypeUnhandled      = "Unhandled"
	errTypeService        = "ServiceException"
	errTypeResponseTooBig = "Function.ResponseSizeTooLarge"
)

// maxQueued bounds the invocations waiting for the runtime; Deliver blocks
// beyond it. The agent sends one at a time, so this is only slack.
const maxQueued = 8

var (
	// errBusy: /next while an invocation is outstanding.
	errBusy = errors.New("an invocation is outstanding; post its response or error before calling /next")
	// errUnknownID: a response or error for an id that is not outstanding.
	errUnknownID = errors.New("request ID is not the outstanding invocation")
	// errBodyTooLarge: a request body above api.MaxSyncPayload.
	errBodyTooLarge = errors.New("request body too large")
)

// FrameSender sends frames to the agent. *api.FrameWriter is one.
type FrameSender interface {
	Write(f api.Frame) error
}

// RuntimeAPI serves the AWS Lambda Runtime API to one runtime and turns
// its calls into frames: invocations come in through Deliver, responses,
// errors and readiness go out through the FrameSender. It is an
// http.Handler and knows nothing of processes.
type RuntimeAPI struct {
	out   FrameSender
	log   *slog.Logger
	slots chan struct{} // one token per queued invocation

	mu        sync.Mutex
	queue     []api.Frame   // invocations not yet handed to the runtime
	wake      chan struct{} // closed (and replaced) when /next waiters should look again
	current   *api.FrameMeta
	answering bool // a response or error for current is being read
	started   bool // the runtime has called /next at least once
}

// NewRuntimeAPI returns a RuntimeAPI that sends its frames to out.
func NewRuntimeAPI(out FrameSender, log *slog.Logger) *RuntimeAPI {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RuntimeAPI{
		out:   out,
		log:   log,
		slots: make(chan struct{}, maxQueued),
		wake:  make(chan struct{}),
	}
}

// Deliver queues an invoke frame for the runtime's next /next. It blocks
// while the queue is full, until ctx is done.
func (a *RuntimeAPI) Deliver(ctx context.Context, f api.Frame) error {
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	a.mu.Lock()
	a.queue = append(a.queue, f)
	a.wakeLocked()
	a.mu.Unlock()
	return nil
}

func (a *RuntimeAPI) wakeLocked() {
	close(a.wake)
	a.wake = make(chan struct{})
}

// ServeHTTP routes the Runtime API endpoints.
func (a *RuntimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, apiPrefix)
	if !ok {
		writeLambdaError(w, http.StatusNotFound, errTypeNotFound, "no such endpoint: "+r.URL.Path)
		return
	}
	switch rest {
	case "invocation/next":
		if allow(w, r, http.MethodGet) {
			a.next(w, r)
		}
		return
	case "init/error":
		if allow(w, r, http.MethodPost) {
			a.initError(w, r)
		}
		return
	}
	id, action, ok := invocationPath(rest)
	if !ok {
		writeLambdaError(w, http.StatusNotFound, errTypeNotFound, "no such endpoint: "+r.URL.Path)
		return
	}
	if !allow(w, r, http.MethodPost) {
		return
	}
	if action == "response" {
		a.response(w, r, id)
	} else {
		a.invocationError(w, r, id)
	}
}

// invocationPath splits "invocation/{id}/response|error".
func invocationPath(rest string) (id, action string, ok bool) {
	rest, ok = strings.CutPrefix(rest, "invocation/")
	if !ok {
		return "", "", false
	}
	id, action, ok = strings.Cut(rest, "/")
	if !ok || id == "" || (action != "response" && action != "error") {
		return "", "", false
	}
	return id, action, true
}

// allow answers 405 unless r uses method.
func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeLambdaError(w, http.StatusMethodNotAllowed, errTypeMethod,
		fmt.Sprintf("method %s not allowed; use %s", r.Method, method))
	return false
}

// next serves GET /invocation/next.
func (a *RuntimeAPI) next(w http.ResponseWriter, r *http.Request) {
	f, err := a.await(r.Context())
	switch {
	case errors.Is(err, errBusy):
		writeLambdaError(w, http.StatusForbidden, errTypeInvalidState, err.Error())
		return
	case err != nil:
		// The runtime hung up (nobody hears this) or amber-init is
		// shutting down: Lambda's 500 tells a runtime to exit, where an
		// unwritten reply would be an empty 200.
		writeLambdaError(w, http.StatusInternalServerError, errTypeService, "amber-init is shutting down")
		return
	}
	writeInvocation(w, f)
}

// await waits for the next invocation and makes it the outstanding one.
// A /next that finds nothing queued announces a FrameReady before waiting.
func (a *RuntimeAPI) await(ctx context.Context) (api.Frame, error) {
	a.mu.Lock()
	a.started = true
	if a.current != nil {
		a.mu.Unlock()
		return api.Frame{}, errBusy
	}
	announced := false
	for {
		if err := ctx.Err(); err != nil {
			a.mu.Unlock()
			return api.Frame{}, err
		}
		if a.current == nil && len(a.queue) > 0 {
			f := a.queue[0]
			a.queue = a.queue[1:]
			<-a.slots
			meta := f.Meta
			a.current = &meta
			a.mu.Unlock()
			return f, nil
		}
		// Each /next that has to wait says so once; later wake-ups that
		// lost the race to another waiter stay quiet.
		announce := !announced
		announced = true
		wake := a.wake
		a.mu.Unlock()
		if announce {
			a.send(api.Frame{Kind: api.FrameReady})
		}
		select {
		case <-wake:
		case <-ctx.Done():
		}
		a.mu.Lock()
	}
}

// writeInvocation answers /next with the invocation's payload and headers.
func writeInvocation(w http.ResponseWriter, f api.Frame) {
	m := f.Meta
	deadline := m.DeadlineMs
	if deadline == 0 {
		deadline = time.Now().Add(api.MaxTimeout).UnixMilli()
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(hdrRequestID, m.RequestID)
	h.Set(hdrDeadlineMs, strconv.FormatInt(deadline, 10))
	h.Set(hdrFunctionARN, m.FunctionARN)
	h.Set(hdrTraceID, m.TraceID)
	if m.ClientContext != "" {
		h.Set(hdrClientContext, m.ClientContext)
	}
	if m.CognitoIdentity != "" {
		h.Set(hdrCognitoIdentity, m.CognitoIdentity)
	}
	h.Set("Content-Length", strconv.Itoa(len(f.Body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(f.Body)
}

// claim marks id as being answered, or fails with errUnknownID.
func (a *RuntimeAPI) claim(id string) (api.FrameMeta, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current == nil || a.current.RequestID != id || a.answering {
		return api.FrameMeta{}, errUnknownID
	}
	a.answering = true
	return *a.current, nil
}

// finish ends the claim; done says the invocation is answered.
func (a *RuntimeAPI) finish(done bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.answering = false
	if done {
		a.current = nil
		if len(a.queue) > 0 {
			a.wakeLocked()
		}
	}
}

// response serves POST /invocation/{id}/response.
func (a *RuntimeAPI) response(w http.ResponseWriter, r *http.Request, id string) {
	meta, err := a.claim(id)
	if err != nil {
		writeLambdaError(w, http.StatusBadRequest, errTypeInvalidID, fmt.Sprintf("%v: %q", err, id))
		return
	}
	body, err := readBody(r)
	if !a.bodyOK(w, meta.RequestID, err) {
		return
	}
	if typ := r.Trailer.Get(hdrErrorType); typ != "" {
		// aws-lambda-go reports a failure while streaming the response in trailers.
		a.sendError(meta.RequestID, trailerError(typ, r.Trailer.Get(trlErrorBody)))
	} else {
		a.send(api.Frame{Kind: api.FrameResponse, Meta: api.FrameMeta{RequestID: meta.RequestID}, Body: body})
	}
	a.finish(true)
	writeAccepted(w)
}

// invocationError serves POST /invocation/{id}/error.
func (a *RuntimeAPI) invocationError(w http.ResponseWriter, r *http.Request, id string) {
	meta, err := a.claim(id)
	if err != nil {
		writeLambdaError(w, http.StatusBadRequest, errTypeInvalidID, fmt.Sprintf("%v: %q", err, id))
		return
	}
	body, err := readBody(r)
	if !a.bodyOK(w, meta.RequestID, err) {
		return
	}
	a.sendError(meta.RequestID, parseFunctionError(body, r.Header.Get(hdrErrorType)))
	a.finish(true)
	writeAccepted(w)
}

// bodyOK handles a failed body read for a claimed invocation and says
// whether the handler may go on. A body over the limit ends the
// invocation with Function.ResponseSizeTooLarge so the caller gets an answer.
func (a *RuntimeAPI) bodyOK(w http.ResponseWriter, id string, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, errBodyTooLarge):
		a.sendError(id, api.FunctionError{
			ErrorType:    errTypeResponseTooBig,
			ErrorMessage: fmt.Sprintf("Response payload size exceeded maximum allowed payload size (%d bytes).", api.MaxSyncPayload),
		})
		a.finish(true)
		writeLambdaError(w, http.StatusRequestEntityTooLarge, errTypeTooLarge,
			fmt.Sprintf("payload exceeds %d bytes", api.MaxSyncPayload))
	default:
		a.finish(false)
		writeLambdaError(w, http.StatusBadRequest, errTypeBadBody, err.Error())
	}
	return false
}

// initError serves POST /init/error, allowed only before the first /next.
func (a *RuntimeAPI) initError(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	started := a.started
	a.mu.Unlock()
	if started {
		writeLambdaError(w, http.StatusForbidden, errTypeInvalidState, "init already finished: the runtime has called /next")
		return
	}
	body, err := readBody(r)
	var fe api.FunctionError
	switch {
	case errors.Is(err, errBodyTooLarge):
		fe = api.FunctionError{ErrorType: errorTypeOr(r.Header.Get(hdrErrorType)), ErrorMessage: "init error body too large"}
	case err != nil:
		writeLambdaError(w, http.StatusBadRequest, errTypeBadBody, err.Error())
		return
	default:
		fe = parseFunctionError(body, r.Header.Get(hdrErrorType))
	}
	a.send(api.Frame{Kind: api.FrameInitError, Meta: api.FrameMeta{ErrorType: fe.ErrorType}, Body: mustJSON(fe)})
	if errors.Is(err, errBodyTooLarge) {
		writeLambdaError(w, http.StatusRequestEntityTooLarge, errTypeTooLarge,
			fmt.Sprintf("payload exceeds %d bytes", api.MaxSyncPayload))
		return
	}
	writeAccepted(w)
}

// sendError sends a FrameError for id.
func (a *RuntimeAPI) sendError(id string, fe api.FunctionError) {
	a.send(api.Frame{
		Kind: api.FrameError,
		Meta: api.FrameMeta{RequestID: id, ErrorType: fe.ErrorType},
		Body: mustJSON(fe),
	})
}

func (a *RuntimeAPI) send(f api.Frame) {
	if err := a.out.Write(f); err != nil {
		a.log.Error("send frame", "kind", string(rune(f.Kind)), "id", f.Meta.RequestID, "err", err)
	}
}

// readBody reads a request body of at most api.MaxSyncPayload bytes.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxSyncPayload+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if len(body) > api.MaxSyncPayload {
		return nil, errBodyTooLarge
	}
	return body, nil
}

// parseFunctionError reads a runtime's error report. A body that is not
// the Lambda error JSON becomes the message; the type falls back to
// headerType, then "Unhandled".
func parseFunctionError(body []byte, headerType string) api.FunctionError {
	var raw struct {
		ErrorMessage string          `json:"errorMessage"`
		ErrorType    string          `json:"errorType"`
		StackTrace   json.RawMessage `json:"stackTrace"`
	}
	var fe api.FunctionError
	if err := json.Unmarshal(body, &raw); err == nil {
		fe = api.FunctionError{ErrorMessage: raw.ErrorMessage, ErrorType: raw.ErrorType, StackTrace: stackLines(raw.StackTrace)}
	} else {
		fe.ErrorMessage = strings.TrimSpace(string(body))
	}
	if fe.ErrorType == "" {
		fe.ErrorType = errorTypeOr(headerType)
	}
	return fe
}

func errorTypeOr(t string) string {
	if t == "" {
		return errTypeUnhandled
	}
	return t
}

// stackLines turns a stackTrace of strings (Node, Python) or of
// {path,line,label} objects (aws-lambda-go) into lines.
func stackLines(raw json.RawMessage) []string {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var lines []string
	if json.Unmarshal(raw, &lines) == nil {
		return lines
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return []string{string(raw)}
	}
	lines = make([]string, 0, len(items))
	for _, it := range items {
		var s string
		var fr struct {
			Path  string `json:"path"`
			Line  int    `json:"line"`
			Label string `json:"label"`
		}
		switch {
		case json.Unmarshal(it, &s) == nil:
			lines = append(lines, s)
		case json.Unmarshal(it, &fr) == nil && fr.Path != "":
			lines = append(lines, fmt.Sprintf("%s:%d %s", fr.Path, fr.Line, fr.Label))
		default:
			lines = append(lines, string(it))
		}
	}
	return lines
}

// trailerError decodes aws-lambda-go's error trailers.
func trailerError(typ, b64 string) api.FunctionError {
	if body, err := base64.StdEncoding.DecodeString(b64); err == nil && len(body) > 0 {
		return parseFunctionError(body, typ)
	}
	return api.FunctionError{ErrorType: typ, ErrorMessage: "the runtime failed while streaming its response"}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// FunctionError holds only strings; this cannot happen.
		panic(err)
	}
	return b
}

func writeAccepted(w http.ResponseWriter) {
	api.WriteJSON(w, http.StatusAccepted, map[string]string{"status": "OK"})
}

// writeLambdaError writes Lambda's error shape {errorMessage, errorType}.
func writeLambdaError(w http.ResponseWriter, status int, typ, msg string) {
	api.WriteJSON(w, status, api.FunctionError{ErrorType: typ, ErrorMessage: msg})
}
