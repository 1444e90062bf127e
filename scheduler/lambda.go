package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/amberfn/amber/api"
)

// The Lambda-compatible Invoke API:
//
//	POST /2015-03-31/functions/{name}/invocations[?Qualifier=N|$LATEST]
//
// authenticated with AWS Signature Version 4 (service "lambda", any region)
// under the access key amber issues (Scheduler.AccessKey), so the AWS CLI
// and SDKs work with --endpoint-url / BaseEndpoint and nothing else changed.
//
//	X-Amz-Invocation-Type  RequestResponse (default) → 200 and the function's payload;
//	                       a function error is 200 with X-Amz-Function-Error: Unhandled
//	                       and the error JSON
//	                       Event   → 202, the payload queued (durable, retried)
//	                       DryRun  → 204 once the function exists and the signature holds
//	X-Amz-Log-Type: Tail   → X-Amz-Log-Result: base64 of the last 4 KB of the invocation's log
//	X-Amz-Executed-Version "$LATEST", or the version asked for with Qualifier
//	X-Amzn-RequestId       the invocation's request id (the Amber-* headers come along too)
//
// Errors carry X-Amzn-ErrorType and {"Type":"User"|"Service","message":…},
// which the SDKs turn into their typed exceptions.
const (
	lambdaInvokePath = "/2015-03-31/functions/{name}/invocations"
	// lambdaAccount is the account id in the ARNs amber reports.
	lambdaAccount = "000000000000"
	// maxLambdaResponse bounds what is buffered of an agent's answer.
	maxLambdaResponse = api.MaxSyncPayload + 1<<20
)

// Lambda's headers.
const (
	hdrAmzInvocationType  = "X-Amz-Invocation-Type"
	hdrAmzLogType         = "X-Amz-Log-Type"
	hdrAmzLogResult       = "X-Amz-Log-Result"
	hdrAmzFunctionError   = "X-Amz-Function-Error"
	hdrAmzExecutedVersion = "X-Amz-Executed-Version"
	hdrAmznRequestID      = "X-Amzn-RequestId"
	hdrAmznErrorType      = "X-Amzn-ErrorType"
)

// Lambda's exception names.
const (
	excResourceNotFound  = "ResourceNotFoundException"
	excInvalidContent    = "InvalidRequestContentException"
	excInvalidParameter  = "InvalidParameterValueException"
	excRequestTooLarge   = "RequestTooLargeException"
	excTooManyRequests   = "TooManyRequestsException"
	excService           = "ServiceException"
	excUnsupportedMedia  = "UnsupportedMediaTypeException"
	lambdaErrUser        = "User"
	lambdaErrServiceType = "Service"
)

// lambdaError is one of Lambda's error replies.
type lambdaError struct {
	status  int
	code    string
	message string
	reason  string // TooManyRequestsException's Reason
}

func (e *lambdaError) Error() string { return e.code + ": " + e.message }

func lambdaErr(status int, code, format string, args ...any) *lambdaError {
	return &lambdaError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// writeLambdaError writes e the way Lambda does: X-Amzn-ErrorType and
// {"Type":…,"message":…}.
func writeLambdaError(w http.ResponseWriter, e *lambdaError) {
	typ := lambdaErrUser
	if e.status >= 500 {
		typ = lambdaErrServiceType
	}
	body := map[string]string{"Type": typ, "message": e.message}
	if e.reason != "" {
		body["Reason"] = e.reason
	}
	w.Header().Set(hdrAmznErrorType, e.code)
	api.WriteJSON(w, e.status, body)
}

// lambdaErrorFor maps an amber error (a sentinel, or an api.ErrorBody
// reply of the given status) to Lambda's exception.
func lambdaErrorFor(status int, msg string) *lambdaError {
	switch status {
	case http.StatusBadRequest:
		return lambdaErr(status, excInvalidParameter, "%s", msg)
	case http.StatusNotFound:
		return lambdaErr(status, excResourceNotFound, "%s", msg)
	case http.StatusRequestEntityTooLarge:
		return lambdaErr(status, excRequestTooLarge, "%s", msg)
	case http.StatusTooManyRequests:
		e := lambdaErr(status, excTooManyRequests, "Rate Exceeded. %s", msg)
		e.reason = "ConcurrentInvocationLimitExceeded"
		return e
	case http.StatusUnsupportedMediaType:
		return lambdaErr(status, excUnsupportedMedia, "%s", msg)
	}
	if status < 500 {
		return lambdaErr(status, excInvalidParameter, "%s", msg)
	}
	return lambdaErr(status, excService, "%s", msg)
}

func lambdaErrorOf(err error) *lambdaError {
	var le *lambdaError
	if errors.As(err, &le) {
		return le
	}
	var se *sigV4Error
	if errors.As(err, &se) {
		return lambdaErr(http.StatusForbidden, se.Code, "%s", se.Message)
	}
	status, _ := api.StatusFor(err)
	return lambdaErrorFor(status, err.Error())
}

// functionARN is the ARN Lambda would report for name in region.
func functionARN(region, name, qualifier string) string {
	arn := "arn:aws:lambda:" + region + ":" + lambdaAccount + ":function:" + name
	if qualifier != "" {
		arn += ":" + qualifier
	}
	return arn
}

// parseFunctionName accepts what Lambda's FunctionName takes: a name
// ("hello"), a name with a qualifier ("hello:3"), a partial ARN
// ("123456789012:function:hello") or a full ARN
// ("arn:aws:lambda:us-east-1:123456789012:function:hello:$LATEST"), and
// returns the name and the qualifier it carries ("" when none).
func parseFunctionName(s string) (name, qualifier string, err error) {
	parts := strings.Split(s, ":")
	switch {
	case len(parts) == 1:
		name = parts[0]
	case len(parts) == 2:
		name, qualifier = parts[0], parts[1]
	case len(parts) >= 7 && parts[0] == "arn" && parts[2] == "lambda" && parts[5] == "function" && len(parts) <= 8:
		name = parts[6]
		if len(parts) == 8 {
			qualifier = parts[7]
		}
	case (len(parts) == 3 || len(parts) == 4) && parts[1] == "function":
		name = parts[2]
		if len(parts) == 4 {
			qualifier = parts[3]
		}
	default:
		return "", "", lambdaErr(http.StatusBadRequest, excInvalidParameter, "FunctionName %q: want a name, NAME:QUALIFIER or a function ARN", s)
	}
	if err := api.ValidateName("FunctionName", name); err != nil {
		return "", "", lambdaErr(http.StatusBadRequest, excInvalidParameter, "%v", err)
	}
	return name, qualifier, nil
}

// lambdaFunction finds the version of name a qualifier names: "" and
// "$LATEST" are the latest, a number is that version; amber has no aliases.
func (s *Scheduler) lambdaFunction(region, name, qualifier string) (*api.Function, error) {
	var fn *api.Function
	var err error
	switch {
	case qualifier == "" || qualifier == "$LATEST":
		fn, err = s.reg.latest(name)
	default:
		n, perr := strconv.Atoi(qualifier)
		if perr != nil || n < 1 {
			// An alias amber does not have.
			return nil, lambdaErr(http.StatusNotFound, excResourceNotFound, "Function not found: %s (amber has versions, not aliases)", functionARN(region, name, qualifier))
		}
		fn, err = s.reg.version(name, n)
	}
	if errors.Is(err, api.ErrNotFound) {
		return nil, lambdaErr(http.StatusNotFound, excResourceNotFound, "Function not found: %s", functionARN(region, name, qualifier))
	}
	return fn, err
}

// lambdaSignedHeaders are the x-amz-* headers that change what an Invoke
// does; one that is present must be signed (the AWS CLI and SDKs sign every
// x-amz-* header they send), so a captured synchronous call cannot be
// replayed as an Event, or with its log tail asked for.
var lambdaSignedHeaders = []string{hdrAmzInvocationType, hdrAmzLogType, "X-Amz-Client-Context", "X-Amz-Content-Sha256", "X-Amz-Security-Token"}

// handleLambdaInvoke serves Lambda's Invoke API.
func (s *Scheduler) handleLambdaInvoke(w http.ResponseWriter, r *http.Request) {
	reqID := s.newRequestID()
	w.Header().Set(hdrAmznRequestID, reqID)
	fail := func(err error) {
		le := lambdaErrorOf(err)
		if le.status == http.StatusForbidden {
			s.log.Info("lambda invoke refused", "code", le.code, "err", le.message, "remote", r.RemoteAddr)
		}
		writeLambdaError(w, le)
	}
	check := sigV4Check{key: s.AccessKey(), service: "lambda", now: s.now(), mustSign: lambdaSignedHeaders}
	// The header first, so nobody unauthenticated makes us read 6 MB.
	if _, _, err := check.verifyHeaders(r); err != nil {
		fail(err)
		return
	}
	payload, err := api.ReadPayload(r)
	if err != nil {
		if errors.Is(err, api.ErrTooLarge) {
			fail(lambdaErr(http.StatusRequestEntityTooLarge, excRequestTooLarge,
				"Request must be smaller than %d bytes for the InvokeFunction operation", api.MaxSyncPayload))
			return
		}
		fail(err)
		return
	}
	auth, err := check.verify(r, payload)
	if err != nil {
		fail(err)
		return
	}
	name, qualifier, err := parseFunctionName(r.PathValue("name"))
	if err != nil {
		fail(err)
		return
	}
	if q := r.URL.Query().Get("Qualifier"); q != "" {
		if qualifier != "" && qualifier != q {
			fail(lambdaErr(http.StatusBadRequest, excInvalidParameter, "The derived qualifier from the function name does not match the specified qualifier."))
			return
		}
		qualifier = q
	}
	fn, err := s.lambdaFunction(auth.Region, name, qualifier)
	if err != nil {
		fail(err)
		return
	}
	executed := "$LATEST"
	if qualifier != "" {
		executed = qualifier
	}
	logTail := false
	switch lt := r.Header.Get(hdrAmzLogType); lt {
	case "", "None":
	case "Tail":
		logTail = true
	default:
		fail(lambdaErr(http.StatusBadRequest, excInvalidParameter, "%s %q: want None or Tail", hdrAmzLogType, lt))
		return
	}
	if len(bytes.TrimSpace(payload)) > 0 && !json.Valid(payload) {
		fail(lambdaErr(http.StatusBadRequest, excInvalidContent, "Could not parse request body into json: the payload (%d bytes) is not valid JSON", len(payload)))
		return
	}
	switch it := r.Header.Get(hdrAmzInvocationType); it {
	case "", "RequestResponse":
	case "DryRun":
		w.Header().Set(hdrAmzExecutedVersion, executed)
		w.WriteHeader(http.StatusNoContent)
		return
	case "Event":
		id, err := s.enqueue(fn, payload)
		if err != nil {
			if errors.Is(err, api.ErrTooLarge) {
				fail(lambdaErr(http.StatusRequestEntityTooLarge, excRequestTooLarge, "%v", err))
				return
			}
			fail(err)
			return
		}
		w.Header().Set(hdrAmznRequestID, id)
		w.Header().Set(api.HeaderEventID, id)
		w.WriteHeader(http.StatusAccepted)
		return
	default:
		fail(lambdaErr(http.StatusBadRequest, excInvalidParameter, "%s %q: want RequestResponse, Event or DryRun", hdrAmzInvocationType, it))
		return
	}

	ctx := r.Context()
	if logTail {
		ctx = withLogTail(ctx)
	}
	rec := s.invokeCaptured(ctx, fn, reqID, payload)
	for k, vs := range rec.header {
		if strings.HasPrefix(k, "Amber-") && k != api.HeaderLogResult {
			w.Header()[k] = vs
		}
	}
	if id := rec.header.Get(api.HeaderRequestID); id != "" {
		w.Header().Set(hdrAmznRequestID, id)
	}
	if rec.truncated {
		fail(lambdaErr(http.StatusBadGateway, excService, "request %s: the response is over %d bytes", reqID, maxLambdaResponse))
		return
	}
	fe := rec.header.Get(api.HeaderFunctionError)
	if rec.status != http.StatusOK && fe == "" {
		// A platform failure: an api.ErrorBody.
		msg := http.StatusText(rec.status)
		var eb api.ErrorBody
		if json.Unmarshal(rec.body.Bytes(), &eb) == nil && eb.Error.Message != "" {
			msg = eb.Error.Message
		}
		if ra := rec.header.Get("Retry-After"); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		fail(lambdaErrorFor(rec.status, msg))
		return
	}
	w.Header().Set(hdrAmzExecutedVersion, executed)
	if fe != "" {
		w.Header().Set(hdrAmzFunctionError, fe)
	}
	if logTail {
		w.Header().Set(hdrAmzLogResult, rec.header.Get(api.HeaderLogResult))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(rec.body.Bytes())
}

// recorder collects an invocation's answer, keeping at most limit bytes
// of its body: the whole answer for the Lambda API (maxLambdaResponse), the
// start of it for an async delivery's outcome (maxCapture).
type recorder struct {
	header    http.Header
	status    int
	body      bytes.Buffer
	limit     int
	truncated bool
}

func newRecorder(limit int) *recorder { return &recorder{header: http.Header{}, limit: limit} }

func (c *recorder) Header() http.Header { return c.header }
func (c *recorder) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}
func (c *recorder) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n := len(p)
	room := c.limit - c.body.Len()
	if n > room {
		c.truncated = true
		p = p[:max(room, 0)]
	}
	c.body.Write(p)
	return n, nil
}

// invokeCaptured runs one synchronous invocation through admission,
// placement and forwarding (Scheduler.invoke) and returns its answer:
// status 200 with the agent's Amber-* headers and the function's payload
// (or error JSON with Amber-Function-Error), or an api.ErrorBody reply.
func (s *Scheduler) invokeCaptured(ctx context.Context, fn *api.Function, reqID string, payload []byte) *recorder {
	rec := newRecorder(maxLambdaResponse)
	s.invoke(rec, ctx, fn, reqID, payload)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec
}

type logTailKey struct{}

// withLogTail asks the agent for the invocation's log tail (Amber-Log-Type: Tail).
func withLogTail(ctx context.Context) context.Context {
	return context.WithValue(ctx, logTailKey{}, true)
}

func wantsLogTail(ctx context.Context) bool {
	v, _ := ctx.Value(logTailKey{}).(bool)
	return v
}
