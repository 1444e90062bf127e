package scheduler

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"

	"github.com/amberfn/amber/api"
)

// lambdaTest is a scheduler on the real clock (SigV4 dates are checked
// against it) with one fake agent and function "echo" deployed.
type lambdaTest struct {
	*testScheduler
	agent *fakeAgent
	fn    api.Function
}

func newLambdaTest(t *testing.T) *lambdaTest {
	t.Helper()
	ts := newTestScheduler(t, WithToken("tok"), WithClock(time.Now))
	ag := newFakeAgent(t, "n1")
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 4096))
	fn := ts.deploy(t, "echo", 128)
	return &lambdaTest{testScheduler: ts, agent: ag, fn: fn}
}

// client is an aws-sdk-go-v2 Lambda client for the test scheduler, signing
// with key (the scheduler's own when zero), without retries.
func (lt *lambdaTest) client(key AccessKey) *lambda.Client {
	if key == (AccessKey{}) {
		key = lt.AccessKey()
	}
	return lambda.New(lambda.Options{
		BaseEndpoint: aws.String(lt.srv.URL),
		Region:       "eu-west-1",
		Credentials:  credentials.NewStaticCredentialsProvider(key.AccessKeyID, key.SecretAccessKey, ""),
		HTTPClient:   lt.srv.Client(),
		Retryer:      aws.NopRetryer{},
	})
}

func invokeIn(name, payload string) *lambda.InvokeInput {
	in := &lambda.InvokeInput{FunctionName: aws.String(name)}
	if payload != "" {
		in.Payload = []byte(payload)
	}
	return in
}

func TestLambdaInvokeThroughSDK(t *testing.T) {
	lt := newLambdaTest(t)
	c := lt.client(AccessKey{})
	ctx := t.Context()

	out, err := c.Invoke(ctx, invokeIn("echo", `{"name":"x"}`))
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if out.StatusCode != 200 || string(out.Payload) != `{"name":"x"}` || aws.ToString(out.ExecutedVersion) != "$LATEST" ||
		out.FunctionError != nil || out.LogResult != nil {
		t.Errorf("Invoke → %d %s version %q error %v log %v", out.StatusCode, out.Payload, aws.ToString(out.ExecutedVersion), out.FunctionError, out.LogResult)
	}
	got := lt.agent.got()
	if len(got) != 1 || got[0].Version != "1" || got[0].Auth != "Bearer tok" || string(got[0].Payload) != `{"name":"x"}` {
		t.Fatalf("agent got %+v", got)
	}

	t.Run("function error", func(t *testing.T) {
		lt.agent.setReply(func(w http.ResponseWriter, r *http.Request, _ []byte) {
			res := api.InvokeResult{RequestID: r.Header.Get(api.HeaderRequestID), Function: "echo", Version: 1, Agent: "n1", FunctionError: "Unhandled"}
			res.WriteHeaders(w.Header())
			w.Write([]byte(`{"errorMessage":"boom","errorType":"errorString"}`))
		})
		defer lt.agent.setReply(nil)
		out, err := c.Invoke(ctx, invokeIn("echo", `{"fail":true}`))
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		if out.StatusCode != 200 || aws.ToString(out.FunctionError) != "Unhandled" || !strings.Contains(string(out.Payload), `"boom"`) {
			t.Errorf("→ %d error %q %s", out.StatusCode, aws.ToString(out.FunctionError), out.Payload)
		}
	})

	t.Run("log tail", func(t *testing.T) {
		tail := "START RequestId: r\nhello\nEND RequestId: r\nREPORT RequestId: r\tDuration: 1.00 ms\n"
		var asked []string
		lt.agent.setReply(func(w http.ResponseWriter, r *http.Request, p []byte) {
			asked = append(asked, r.Header.Get(api.HeaderLogType))
			if r.Header.Get(api.HeaderLogType) == api.LogTypeTail {
				w.Header().Set(api.HeaderLogResult, base64.StdEncoding.EncodeToString([]byte(tail)))
			}
			w.Write(p)
		})
		defer lt.agent.setReply(nil)
		in := invokeIn("echo", `{}`)
		in.LogType = types.LogTypeTail
		out, err := c.Invoke(ctx, in)
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		b, err := base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
		if err != nil || string(b) != tail {
			t.Errorf("LogResult %q (%v)", b, err)
		}
		// Without Tail the agent is not asked, and nothing comes back.
		out, err = c.Invoke(ctx, invokeIn("echo", `{}`))
		if err != nil || out.LogResult != nil {
			t.Errorf("without Tail: %v, LogResult %v", err, out.LogResult)
		}
		if len(asked) != 2 || asked[0] != "Tail" || asked[1] != "" {
			t.Errorf("agent asked for %q", asked)
		}
	})

	t.Run("qualifiers", func(t *testing.T) {
		if _, _, err := lt.Scheduler.deploy("echo", api.FunctionSpec{Image: lt.fn.Image, MemoryMB: 256}); err != nil {
			t.Fatal(err)
		}
		before := len(lt.agent.got())
		for _, tt := range []struct{ name, qualifier, wantVersion, wantExecuted string }{
			{"echo", "", "2", "$LATEST"},
			{"echo", "$LATEST", "2", "$LATEST"},
			{"echo", "1", "1", "1"},
			{"echo:1", "", "1", "1"},
			{"arn:aws:lambda:eu-west-1:000000000000:function:echo", "1", "1", "1"},
			{"arn:aws:lambda:eu-west-1:000000000000:function:echo:$LATEST", "", "2", "$LATEST"},
			{"000000000000:function:echo", "", "2", "$LATEST"},
		} {
			in := invokeIn(tt.name, `{}`)
			if tt.qualifier != "" {
				in.Qualifier = aws.String(tt.qualifier)
			}
			out, err := c.Invoke(ctx, in)
			if err != nil {
				t.Errorf("%s qualifier %q: %v", tt.name, tt.qualifier, err)
				continue
			}
			got := lt.agent.got()
			if v := got[len(got)-1].Version; v != tt.wantVersion || aws.ToString(out.ExecutedVersion) != tt.wantExecuted {
				t.Errorf("%s qualifier %q: ran version %s, executed %q; want %s, %q", tt.name, tt.qualifier, v, aws.ToString(out.ExecutedVersion), tt.wantVersion, tt.wantExecuted)
			}
		}
		for _, q := range []string{"7", "prod"} {
			in := invokeIn("echo", `{}`)
			in.Qualifier = aws.String(q)
			var rnf *types.ResourceNotFoundException
			if _, err := c.Invoke(ctx, in); !errors.As(err, &rnf) {
				t.Errorf("qualifier %q: %v; want ResourceNotFoundException", q, err)
			}
		}
		in := invokeIn("echo:1", `{}`)
		in.Qualifier = aws.String("2")
		var ipv *types.InvalidParameterValueException
		if _, err := c.Invoke(ctx, in); !errors.As(err, &ipv) {
			t.Errorf("conflicting qualifiers: %v", err)
		}
		if n := len(lt.agent.got()) - before; n != 7 {
			t.Errorf("agent got %d invocations, want 7", n)
		}
	})

	t.Run("dry run", func(t *testing.T) {
		before := len(lt.agent.got())
		in := invokeIn("echo", `{}`)
		in.InvocationType = types.InvocationTypeDryRun
		out, err := c.Invoke(ctx, in)
		if err != nil || out.StatusCode != 204 {
			t.Fatalf("DryRun: %v %+v", err, out)
		}
		var rnf *types.ResourceNotFoundException
		in.FunctionName = aws.String("nope")
		if _, err := c.Invoke(ctx, in); !errors.As(err, &rnf) {
			t.Errorf("DryRun of a missing function: %v", err)
		}
		in.FunctionName = aws.String("echo")
		if _, err := lt.client(AccessKey{AccessKeyID: lt.AccessKey().AccessKeyID, SecretAccessKey: "x"}).Invoke(ctx, in); err == nil {
			t.Errorf("DryRun with a wrong secret succeeded")
		}
		if n := len(lt.agent.got()) - before; n != 0 {
			t.Errorf("DryRun reached the agent %d times", n)
		}
	})

	t.Run("event", func(t *testing.T) {
		before := len(lt.agent.got())
		in := invokeIn("echo", `{"async":true}`)
		in.InvocationType = types.InvocationTypeEvent
		out, err := c.Invoke(ctx, in)
		if err != nil || out.StatusCode != 202 {
			t.Fatalf("Event: %v %+v", err, out)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := lt.agent.got()
			if len(got) > before && string(got[len(got)-1].Payload) == `{"async":true}` {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("queued event never reached the agent")
			}
			time.Sleep(20 * time.Millisecond)
		}
		in.Payload = bytes.Repeat([]byte(" "), api.MaxAsyncPayload+1)
		var tl *types.RequestTooLargeException
		if _, err := c.Invoke(ctx, in); !errors.As(err, &tl) {
			t.Errorf("oversize event: %v; want RequestTooLargeException", err)
		}
	})
}

func TestLambdaErrorsThroughSDK(t *testing.T) {
	lt := newLambdaTest(t)
	c := lt.client(AccessKey{})
	ctx := t.Context()

	code := func(err error) string {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			return ae.ErrorCode()
		}
		return ""
	}
	t.Run("unknown function", func(t *testing.T) {
		_, err := c.Invoke(ctx, invokeIn("nope", `{}`))
		var rnf *types.ResourceNotFoundException
		if !errors.As(err, &rnf) || aws.ToString(rnf.Type) != "User" || !strings.Contains(aws.ToString(rnf.Message), "function:nope") {
			t.Fatalf("%v; want ResourceNotFoundException naming the function", err)
		}
	})
	t.Run("invalid JSON", func(t *testing.T) {
		var irc *types.InvalidRequestContentException
		if _, err := c.Invoke(ctx, invokeIn("echo", `{bad`)); !errors.As(err, &irc) {
			t.Fatalf("%v; want InvalidRequestContentException", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		var tl *types.RequestTooLargeException
		if _, err := c.Invoke(ctx, invokeIn("echo", `"`+strings.Repeat("x", api.MaxSyncPayload)+`"`)); !errors.As(err, &tl) {
			t.Fatalf("%v; want RequestTooLargeException", err)
		}
	})
	t.Run("throttled", func(t *testing.T) {
		one := 1
		decode[api.PoolStatus](t, lt.doJSON(t, "PUT", "/v1/functions/echo/pool", api.PoolChange{MaxInstances: &one}), http.StatusOK)
		done, _, err := lt.limits.admit(context.Background(), "echo", 1)
		if err != nil {
			t.Fatal(err)
		}
		defer done()
		lt.limits.mu.Lock()
		lt.limits.waiting["echo"] = maxQueued
		lt.limits.mu.Unlock()
		defer func() {
			lt.limits.mu.Lock()
			lt.limits.waiting["echo"] = 0
			lt.limits.mu.Unlock()
		}()
		_, err = c.Invoke(ctx, invokeIn("echo", `{}`))
		var tmr *types.TooManyRequestsException
		if !errors.As(err, &tmr) || tmr.Reason != types.ThrottleReasonConcurrentInvocationLimitExceeded {
			t.Fatalf("%v; want TooManyRequestsException", err)
		}
	})
	t.Run("agent failure", func(t *testing.T) {
		lt.agent.setReply(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			api.WriteJSON(w, http.StatusServiceUnavailable, api.ErrorBody{Error: api.ErrorDetail{Code: "X", Message: "disk on fire"}})
		})
		defer lt.agent.setReply(nil)
		var se *types.ServiceException
		if _, err := c.Invoke(ctx, invokeIn("echo", `{}`)); !errors.As(err, &se) || !strings.Contains(aws.ToString(se.Message), "disk on fire") {
			t.Fatalf("%v; want ServiceException", err)
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		_, err := lt.client(AccessKey{AccessKeyID: lt.AccessKey().AccessKeyID, SecretAccessKey: "guess"}).Invoke(ctx, invokeIn("echo", `{}`))
		if code(err) != "InvalidSignatureException" {
			t.Fatalf("%v; want InvalidSignatureException", err)
		}
	})
	t.Run("unknown access key", func(t *testing.T) {
		_, err := lt.client(AccessKey{AccessKeyID: "AKIAOTHER", SecretAccessKey: lt.AccessKey().SecretAccessKey}).Invoke(ctx, invokeIn("echo", `{}`))
		if code(err) != "UnrecognizedClientException" {
			t.Fatalf("%v; want UnrecognizedClientException", err)
		}
	})
	// Only the first invoke above reached the agent (the agent failure).
	if n := len(lt.agent.got()); n != 1 {
		t.Errorf("agent got %d requests, want 1", n)
	}
}

// TestLambdaWireFormat checks the raw headers and bodies, as the SDKs of
// other languages and the CLI read them.
func TestLambdaWireFormat(t *testing.T) {
	lt := newLambdaTest(t)
	post := func(path string, body string, hdr map[string]string, sign bool, at time.Time) *http.Response {
		t.Helper()
		r, err := http.NewRequest("POST", lt.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		if sign {
			sdkSign(t, r, []byte(body), lt.AccessKey(), "us-east-1", "lambda", at)
		}
		resp, err := lt.srv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	lambdaErrBody := func(resp *http.Response, status int, code string) map[string]string {
		t.Helper()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != status || resp.Header.Get("X-Amzn-ErrorType") != code || resp.Header.Get("X-Amzn-RequestId") == "" {
			t.Fatalf("→ %d %s %v; want %d %s", resp.StatusCode, b, resp.Header, status, code)
		}
		var m map[string]string
		if err := json.Unmarshal(b, &m); err != nil || m["message"] == "" || (m["Type"] != "User" && m["Type"] != "Service") {
			t.Fatalf("error body %s", b)
		}
		return m
	}
	const path = "/2015-03-31/functions/echo/invocations"
	now := time.Now()

	resp := post(path, `{"a":1}`, nil, true, now)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != `{"a":1}` || resp.Header.Get("X-Amz-Executed-Version") != "$LATEST" ||
		resp.Header.Get("X-Amzn-RequestId") == "" || resp.Header.Get("X-Amzn-RequestId") != resp.Header.Get(api.HeaderRequestID) ||
		resp.Header.Get(api.HeaderStartKind) != "warm" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("RequestResponse → %d %s %v", resp.StatusCode, b, resp.Header)
	}
	lambdaErrBody(post(path, `{}`, nil, false, now), 403, "MissingAuthenticationTokenException")
	if m := lambdaErrBody(post(path, `{}`, nil, true, now.Add(-20*time.Minute)), 403, "InvalidSignatureException"); !strings.Contains(m["message"], "Signature expired") {
		t.Errorf("skew message %q", m["message"])
	}
	lambdaErrBody(post("/2015-03-31/functions/nope/invocations", `{}`, nil, true, now), 404, "ResourceNotFoundException")
	lambdaErrBody(post("/2015-03-31/functions/Bad_Name/invocations", `{}`, nil, true, now), 400, "InvalidParameterValueException")
	lambdaErrBody(post(path, `{`, nil, true, now), 400, "InvalidRequestContentException")
	lambdaErrBody(post(path, `{}`, map[string]string{"X-Amz-Invocation-Type": "Sometimes"}, true, now), 400, "InvalidParameterValueException")
	lambdaErrBody(post(path, `{}`, map[string]string{"X-Amz-Log-Type": "All"}, true, now), 400, "InvalidParameterValueException")
	// Oversize payloads are refused before the signature is computed over them.
	lambdaErrBody(post(path, strings.Repeat(" ", api.MaxSyncPayload+1), nil, true, now), 413, "RequestTooLargeException")

	resp = post(path, `{}`, map[string]string{"X-Amz-Invocation-Type": "Event"}, true, now)
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 202 || len(b) != 0 || resp.Header.Get("X-Amzn-RequestId") == "" {
		t.Errorf("Event → %d %q %v", resp.StatusCode, b, resp.Header)
	}
	resp = post(path, `{}`, map[string]string{"X-Amz-Invocation-Type": "DryRun"}, true, now)
	if resp.StatusCode != 204 {
		t.Errorf("DryRun → %d", resp.StatusCode)
	}
	// The bearer token is not a way in, and SigV4 is no way into /v1.
	lambdaErrBody(post(path, `{}`, map[string]string{"Authorization": "Bearer tok"}, false, now), 403, "IncompleteSignatureException")
	if resp := post("/v1/functions/echo/invoke", `{}`, nil, true, now); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("SigV4 on /v1: %d", resp.StatusCode)
	}
}

func TestParseFunctionName(t *testing.T) {
	for _, tt := range []struct{ in, name, qualifier string }{
		{"hello", "hello", ""},
		{"hello:3", "hello", "3"},
		{"hello:$LATEST", "hello", "$LATEST"},
		{"123456789012:function:hello", "hello", ""},
		{"123456789012:function:hello:2", "hello", "2"},
		{"arn:aws:lambda:us-east-1:123456789012:function:hello", "hello", ""},
		{"arn:aws:lambda:us-east-1:123456789012:function:hello:prod", "hello", "prod"},
	} {
		n, q, err := parseFunctionName(tt.in)
		if err != nil || n != tt.name || q != tt.qualifier {
			t.Errorf("%q → %q %q %v", tt.in, n, q, err)
		}
	}
	for _, bad := range []string{"", "Hello", "a:b:c", "arn:aws:s3:::bucket", "arn:aws:lambda:r:1:layer:x:1", "../x"} {
		if _, _, err := parseFunctionName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// amber's own invoke takes Amber-Log-Type: Tail too, and passes the
// agent's Amber-Log-Result through.
func TestNativeInvokeLogTail(t *testing.T) {
	ts := newTestScheduler(t)
	ag := newFakeAgent(t, "n1")
	ts.heartbeat(t, agentHB("n1", ag.srv.URL, 1024))
	ts.deploy(t, "echo", 128)
	var asked []string
	ag.setReply(func(w http.ResponseWriter, r *http.Request, p []byte) {
		asked = append(asked, r.Header.Get(api.HeaderLogType))
		if r.Header.Get(api.HeaderLogType) == api.LogTypeTail {
			w.Header().Set(api.HeaderLogResult, base64.StdEncoding.EncodeToString([]byte("REPORT RequestId: x\n")))
		}
		w.Write(p)
	})
	resp := ts.do(t, "POST", "/v1/functions/echo/invoke", strings.NewReader(`{}`), api.HeaderLogType, api.LogTypeTail)
	if b, _ := base64.StdEncoding.DecodeString(resp.Header.Get(api.HeaderLogResult)); string(b) != "REPORT RequestId: x\n" {
		t.Errorf("%s %q", api.HeaderLogResult, b)
	}
	resp = ts.do(t, "POST", "/v1/functions/echo/invoke", strings.NewReader(`{}`))
	if resp.Header.Get(api.HeaderLogResult) != "" || len(asked) != 2 || asked[0] != "Tail" || asked[1] != "" {
		t.Errorf("asked %q, result %q", asked, resp.Header.Get(api.HeaderLogResult))
	}
}

// TestLambdaReplayWithUnsignedHeaders: a captured, correctly signed
// synchronous call replayed with X-Amz-Invocation-Type or X-Amz-Log-Type
// added is refused with 403 naming the header, and does nothing; the SDK
// (which signs them) still gets Event and Tail.
func TestLambdaReplayWithUnsignedHeaders(t *testing.T) {
	lt := newLambdaTest(t)
	const path = "/2015-03-31/functions/echo/invocations"
	body := []byte(`{"a":1}`)
	captured, err := http.NewRequest("POST", lt.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	sdkSign(t, captured, body, lt.AccessKey(), "us-east-1", "lambda", time.Now())
	replay := func(extra map[string]string) *http.Response {
		t.Helper()
		r, _ := http.NewRequest("POST", lt.srv.URL+path, bytes.NewReader(body))
		r.Header = captured.Header.Clone()
		for k, v := range extra {
			r.Header.Set(k, v)
		}
		resp, err := lt.srv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, extra := range []map[string]string{
		{"X-Amz-Invocation-Type": "Event"},
		{"X-Amz-Invocation-Type": "DryRun"},
		{"X-Amz-Log-Type": "Tail"},
	} {
		for h := range extra {
			resp := replay(extra)
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 403 || resp.Header.Get("X-Amzn-ErrorType") != errInvalidSignature || !strings.Contains(string(b), h) {
				t.Errorf("replay with %v: %d %s %s; want 403 %s naming %s", extra, resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), b, errInvalidSignature, h)
			}
			if resp.Header.Get("X-Amz-Log-Result") != "" {
				t.Errorf("replay with %v got a log tail", extra)
			}
		}
	}
	if n := len(lt.agent.got()); n != 0 {
		t.Errorf("the agent got %d invocations from refused replays", n)
	}
	if pending, err := lt.pendingEvents(); err != nil || len(pending) != 0 {
		t.Errorf("events queued by refused replays: %v %v", pending, err)
	}
	// The captured call as it was still works (within its 15 minutes).
	if resp := replay(nil); resp.StatusCode != 200 {
		t.Errorf("the captured call unchanged: %d", resp.StatusCode)
	}
	// The SDK signs the headers it sends.
	c := lt.client(AccessKey{})
	in := invokeIn("echo", `{"b":2}`)
	in.InvocationType = types.InvocationTypeEvent
	if out, err := c.Invoke(t.Context(), in); err != nil || out.StatusCode != 202 {
		t.Fatalf("SDK Event: %v %v", out, err)
	}
	in = invokeIn("echo", `{"b":3}`)
	in.LogType = types.LogTypeTail
	if _, err := c.Invoke(t.Context(), in); err != nil {
		t.Fatalf("SDK Tail: %v", err)
	}
}
