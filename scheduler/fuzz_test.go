package scheduler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/amberfn/amber/api"
)

// Fuzz targets of the scheduler's input parsing: deploy specs, the Lambda
// API's path, qualifier, headers and SigV4 Authorization, and HTTP route
// events and answers. Each runs its seeds in `go test`; `go tool task
// fuzz` fuzzes each for a while.

var (
	fuzzKey = AccessKey{AccessKeyID: "AMBRFUZZKEY000000000", SecretAccessKey: "fuzz/secret+key=0123456789abcdefghijklm"}
	fuzzNow = time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
)

// newFuzzScheduler is a scheduler without a server, on a fixed clock, with
// one image in its store (returned) and no agents.
func newFuzzScheduler(f *testing.F) (*Scheduler, string) {
	f.Helper()
	s, err := New(WithDataDir(f.TempDir()), WithToken("tok"), WithLogger(slog.New(slog.DiscardHandler)),
		WithClock(func() time.Time { return fuzzNow }), WithAccessKey(fuzzKey.AccessKeyID, fuzzKey.SecretAccessKey))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	buf := bytes.NewReader(ociTar(f, "fuzz"))
	digest, _, err := s.images.put(buf)
	if err != nil {
		f.Fatal(err)
	}
	return s, digest
}

// FuzzDeploySpec runs a deploy body through what PUT /v1/functions/{name}
// does with it: the path name check, decodeJSON with the handler's limit,
// defaults, validation and the registry. Properties: never panics; a
// refusal is an invalid-parameter error; what is accepted is stored as
// sent, holds the documented limits and round-trips through JSON.
func FuzzDeploySpec(f *testing.F) {
	s, digest := newFuzzScheduler(f)
	for _, tc := range []struct{ name, body string }{
		{"hello", `{"image":"` + digest + `"}`},
		{"hello", `{"name":"hello","image":"` + digest + `","memory_mb":512,"timeout":"30s","env":{"K":"v"}}`},
		{"pinned", `{"image":"r.example.com/a/b@sha256:` + strings.Repeat("c", 64) + `","memory_mb":10240,"timeout":900000000000}`},
		{"a", `{"name":"b","image":"` + digest + `"}`},
		{"../x", `{"image":"` + digest + `"}`},
		{"x", `{"image":"sha256:` + strings.Repeat("0", 64) + `"}`},
		{"x", `{"image":"` + digest + `","timeout":"1ms"}`},
		{"x", `{"image":"` + digest + `","timeout":"forever"}`},
		{"x", `{"image":"` + digest + `","memory_mb":"big"}`},
		{"x", `{"image":"` + digest + `","env":{"1A":"x"}}`},
		{"x", `{"image":"` + digest + `","env":{}}`},
		{"x", `{"image":"` + digest + `"} {}`},
		{"x", ``},
	} {
		f.Add(tc.name, []byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, name string, body []byte) {
		if api.ValidateName("name", name) != nil {
			return // the handler stops here, before reading the body
		}
		r := httptest.NewRequest("PUT", "/v1/functions/x", bytes.NewReader(body))
		var spec api.FunctionSpec
		if err := decodeJSON(httptest.NewRecorder(), r, maxSpecBytes, &spec); err != nil {
			var fe *api.FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("decode refusal %v is not a FieldError", err)
			}
			return
		}
		sent := spec
		fn, _, err := s.deploy(name, spec)
		if err != nil {
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("deploy refusal %v is not an invalid parameter", err)
			}
			return
		}
		if fn.Name != name || (sent.Name != "" && sent.Name != name) {
			t.Fatalf("deployed %q under path name %q (body name %q)", fn.Name, name, sent.Name)
		}
		if err := fn.FunctionSpec.Validate(); err != nil {
			t.Fatalf("stored spec fails validation: %v", err)
		}
		if fn.MemoryMB < api.MinMemoryMB || fn.MemoryMB > api.MaxMemoryMB ||
			time.Duration(fn.Timeout) < api.MinTimeout || time.Duration(fn.Timeout) > api.MaxTimeout {
			t.Fatalf("stored out-of-range settings: %d MB, %s", fn.MemoryMB, fn.Timeout)
		}
		if (sent.MemoryMB != 0 && fn.MemoryMB != sent.MemoryMB) || (sent.Timeout != 0 && fn.Timeout != sent.Timeout) || fn.Image != sent.Image {
			t.Fatalf("stored %+v, sent %+v", fn.FunctionSpec, sent)
		}
		for k, v := range fn.Env {
			if k == "" || ('0' <= k[0] && k[0] <= '9') || strings.TrimLeft(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != "" ||
				strings.HasPrefix(k, "AWS_LAMBDA_") || strings.IndexByte(v, 0) >= 0 {
				t.Fatalf("stored env %q=%q", k, v)
			}
		}
		b, err := json.Marshal(fn)
		if err != nil {
			t.Fatal(err)
		}
		var back api.Function
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("stored function does not decode back: %v", err)
		}
		if !back.UpdatedAt.Equal(fn.UpdatedAt) {
			t.Fatalf("updated_at %s → %s", fn.UpdatedAt, back.UpdatedAt)
		}
		back.UpdatedAt = fn.UpdatedAt
		if !reflect.DeepEqual(&back, fn) {
			t.Fatalf("JSON round trip changed the function:\n%#v\n%#v", fn, &back)
		}
		latest, err := s.reg.latest(name)
		if err != nil || latest.Version != fn.Version || !reflect.DeepEqual(latest.FunctionSpec, fn.FunctionSpec) {
			t.Fatalf("registry has %+v (%v), deploy returned %+v", latest, err, fn)
		}
	})
}

// FuzzParseFunctionName: Lambda's FunctionName forms. Properties: never
// panics; never yields a name that fails ValidateName; the name and
// qualifier it yields parse back to themselves.
func FuzzParseFunctionName(f *testing.F) {
	for _, s := range []string{
		"hello", "hello:3", "hello:$LATEST", "123456789012:function:hello", "123456789012:function:hello:2",
		"arn:aws:lambda:us-east-1:123456789012:function:hello", "arn:aws:lambda:us-east-1:123456789012:function:hello:prod",
		"../x", "..", "a/b", "%2e%2e", "x\x00y", "Hello", strings.Repeat("a", 64), "h\u0435llo", "a:b:c", "arn:aws:lambda:::::",
		"arn:aws:lambda:r:1:function::", ":", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, qualifier, err := parseFunctionName(s)
		if err != nil {
			var le *lambdaError
			if !errors.As(err, &le) || le.status != http.StatusBadRequest || le.code != excInvalidParameter {
				t.Fatalf("refusal %v is not InvalidParameterValueException", err)
			}
			return
		}
		if err := api.ValidateName("name", name); err != nil {
			t.Fatalf("%q → name %q that fails validation: %v", s, name, err)
		}
		if !strings.Contains(s, name) || strings.Contains(qualifier, ":") {
			t.Fatalf("%q → %q %q", s, name, qualifier)
		}
		if !strings.Contains(s, ":") && (name != s || qualifier != "") {
			t.Fatalf("plain %q → %q %q", s, name, qualifier)
		}
		again := name
		if qualifier != "" {
			again += ":" + qualifier
		}
		if n, q, err := parseFunctionName(again); err != nil || n != name || q != qualifier {
			t.Fatalf("%q → %q %q, but %q → %q %q %v", s, name, qualifier, again, n, q, err)
		}
	})
}

// escapeSegment percent-encodes everything but letters and digits, dots
// and slashes included, so the whole string arrives as one path value.
func escapeSegment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	return b.String()
}

// sdkSignAt signs r over body with aws-sdk-go-v2's signer (an
// implementation independent of ours).
func sdkSignAt(r *http.Request, body []byte, key AccessKey, region string, at time.Time) error {
	sum := sha256.Sum256(body)
	return v4.NewSigner().SignHTTP(context.Background(),
		aws.Credentials{AccessKeyID: key.AccessKeyID, SecretAccessKey: key.SecretAccessKey},
		r, hex.EncodeToString(sum[:]), "lambda", region, at)
}

// FuzzLambdaInvoke sends correctly signed Lambda Invoke requests with a
// fuzzed function name (path), Qualifier, X-Amz-Invocation-Type,
// X-Amz-Log-Type and payload through the scheduler's handler ("echo"
// version 1 is deployed, no agent is up). Properties: never panics; a
// success names a valid, existing function and version and an invocation
// and log type Lambda has; every refusal is a Lambda error.
func FuzzLambdaInvoke(f *testing.F) {
	s, digest := newFuzzScheduler(f)
	if _, _, err := s.deploy("echo", api.FunctionSpec{Image: digest}); err != nil {
		f.Fatal(err)
	}
	h := s.Handler().(*http.ServeMux)
	for _, tc := range []struct{ name, qualifier, invType, logType, body string }{
		{"echo", "", "DryRun", "", `{}`},
		{"echo", "$LATEST", "DryRun", "Tail", ``},
		{"echo:1", "1", "DryRun", "None", `[1]`},
		{"arn:aws:lambda:us-east-1:000000000000:function:echo:1", "", "DryRun", "", `{}`},
		{"000000000000:function:echo", "$LATEST", "Event", "", `{"a":1}`},
		{"echo", "", "RequestResponse", "", `{}`},
		{"echo", "2", "DryRun", "", `{}`},
		{"echo", "prod", "DryRun", "", `{}`},
		{"echo:1", "2", "DryRun", "", `{}`},
		{"../echo", "", "DryRun", "", `{}`},
		{"..", "", "DryRun", "", `{}`},
		{"ECHO", "", "DryRun", "", `{}`},
		{"echo", "", "dryrun", "", `{}`},
		{"echo", "", "DryRun", "tail", `{}`},
		{"echo", "", "DryRun", "", `{`},
		{"echo\x00", "", "DryRun", "", `{}`},
	} {
		f.Add(tc.name, tc.qualifier, tc.invType, tc.logType, []byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, name, qualifier, invType, logType string, body []byte) {
		u := "http://amber.test:7700/2015-03-31/functions/" + escapeSegment(name) + "/invocations"
		if qualifier != "" {
			u += "?Qualifier=" + url.QueryEscape(qualifier)
		}
		r, err := http.NewRequest("POST", u, bytes.NewReader(body))
		if err != nil {
			return
		}
		for k, v := range map[string]string{hdrAmzInvocationType: invType, hdrAmzLogType: logType} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		if err := sdkSignAt(r, body, fuzzKey, "us-east-1", fuzzNow); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r.WithContext(ctx))
		if _, pattern := h.Handler(r); pattern != "POST "+lambdaInvokePath {
			// The mux does not route it to the Lambda API ("/" as the
			// name leaves an empty segment): a plain 404 or a redirect.
			if rec.Code < 300 {
				t.Fatalf("%q served %d by %q", name, rec.Code, pattern)
			}
			return
		}
		switch rec.Code {
		case http.StatusOK, http.StatusAccepted, http.StatusNoContent:
			n, q, err := parseFunctionName(name)
			if err != nil || n != "echo" {
				t.Fatalf("%q accepted (%d) as %q: %v", name, rec.Code, n, err)
			}
			if qualifier != "" {
				if q != "" && q != qualifier {
					t.Fatalf("%q with Qualifier %q accepted", name, qualifier)
				}
				q = qualifier
			}
			if q != "" && q != "$LATEST" && q != "1" {
				t.Fatalf("qualifier %q accepted", q)
			}
			wantCode := map[string]int{"": 200, "RequestResponse": 200, "Event": 202, "DryRun": 204}
			if c, ok := wantCode[invType]; !ok || c != rec.Code {
				t.Fatalf("invocation type %q answered %d", invType, rec.Code)
			}
			if logType != "" && logType != "None" && logType != "Tail" {
				t.Fatalf("log type %q accepted", logType)
			}
			if len(bytes.TrimSpace(body)) > 0 && !json.Valid(body) {
				t.Fatalf("payload %q accepted", body)
			}
		default:
			if rec.Code < 400 || rec.Header().Get(hdrAmznErrorType) == "" {
				t.Fatalf("%d without X-Amzn-ErrorType: %v %s", rec.Code, rec.Header(), rec.Body)
			}
			var m map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || m["message"] == "" {
				t.Fatalf("error body %q: %v", rec.Body, err)
			}
			// Header values with whitespace other than spaces are signed
			// differently by the SDKs: aws-sdk-go-v2 collapses only spaces,
			// botocore (the AWS CLI) any whitespace, as amber does.
			if rec.Code == http.StatusForbidden && !otherSpace(invType) && !otherSpace(logType) {
				t.Fatalf("a correctly signed request refused: %s", rec.Body)
			}
		}
	})
}

// otherSpace reports whether s holds whitespace other than ' '.
func otherSpace(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r != ' ' && unicode.IsSpace(r) })
}

// FuzzParseSigV4Auth: the Authorization header parser. Properties: never
// panics; what it accepts has the shape it promises.
func FuzzParseSigV4Auth(f *testing.F) {
	sig := strings.Repeat("ab", 32)
	for _, s := range []string{
		"AWS4-HMAC-SHA256 Credential=AKID/20250601/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AK/20250601/ap-south-1/lambda/aws4_request,SignedHeaders=X-Amz-Date;host;content-type,Signature=" + strings.ToUpper(sig),
		"AWS4-HMAC-SHA256 Credential=AK/20250601//lambda/aws4_request, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AK/2025-06-01/r/lambda/aws4_request, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AK/20250601/r/lambda/aws4_request, SignedHeaders=host;;x, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AK/20250601/r/lambda/aws4_request, SignedHeaders=x-amz-date, Signature=" + sig,
		"AWS4-HMAC-SHA256 Credential=AK/20250601/r/lambda/aws4_request, SignedHeaders=host, Signature=" + sig[:63] + "g",
		"AWS4-HMAC-SHA256 Credential=AK/20250601/r/lambda/aws4_request, SignedHeaders=host, Signature=" + sig + ", Signature=00",
		"AWS4-HMAC-SHA256 Credential=/20250601/r/lambda/aws4_request, SignedHeaders=host, Signature=" + sig,
		"AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256", "Bearer tok", "", "AWS4-HMAC-SHA256 ,,,=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		a, err := parseSigV4Auth(h)
		if err != nil {
			var se *sigV4Error
			if !errors.As(err, &se) || se.Code == "" || se.Message == "" {
				t.Fatalf("refusal %v is not a sigV4Error", err)
			}
			return
		}
		if !strings.HasPrefix(h, sigV4Algorithm+" ") {
			t.Fatalf("%q accepted without the algorithm", h)
		}
		if a.AccessKeyID == "" || strings.Contains(a.AccessKeyID, "/") {
			t.Fatalf("access key id %q", a.AccessKeyID)
		}
		if _, err := time.Parse("20060102", a.Date); err != nil {
			t.Fatalf("date %q", a.Date)
		}
		if strings.Contains(a.Region, "/") || strings.Contains(a.Service, "/") {
			t.Fatalf("scope %q", a.scope())
		}
		if b, err := hex.DecodeString(a.Signature); err != nil || len(b) != 32 || a.Signature != strings.ToLower(a.Signature) {
			t.Fatalf("signature %q", a.Signature)
		}
		if len(a.SignedHeaders) == 0 || !containsString(a.SignedHeaders, "host") {
			t.Fatalf("signed headers %q", a.SignedHeaders)
		}
		for i, n := range a.SignedHeaders {
			if n == "" || n != strings.ToLower(n) || (i > 0 && a.SignedHeaders[i-1] > n) {
				t.Fatalf("signed headers %q: not lower case, sorted and non-empty", a.SignedHeaders)
			}
		}
	})
}

// FuzzSigV4Mangled signs a Lambda invoke with the AWS SDK's signer, then
// changes one part of it: the path, the query, a signed header, the body,
// the method, the host, X-Amz-Date, one signature digit or the region.
// Property: the verifier accepts the changed request only when the change
// is no change at all for SigV4, i.e. when the SDK signs the changed request
// to the very same signature (or, for the Authorization header itself,
// when it still says the same thing).
func FuzzSigV4Mangled(f *testing.F) {
	const base = "http://amber.test:7700/2015-03-31/functions/echo/invocations?Qualifier=1"
	body := []byte(`{"a":1}`)
	for op, s := range []string{"x", "Qualifier=2", "Event", "", "PUT", "other:7700", "20250601T100001Z", "0", "text/plain", "us-west-2", "/../g", "%51ualifier=1"} {
		f.Add(uint8(op), s, []byte(`{"a":2}`))
	}
	f.Add(uint8(0), "", []byte(nil))
	f.Add(uint8(2), "RequestResponse ", []byte(nil))
	f.Add(uint8(1), "Qualifier=1&", []byte(nil))
	f.Add(uint8(3), "", []byte(`{"a":1}`))
	f.Add(uint8(7), "A", []byte("B"))
	newReq := func() *http.Request {
		r, err := http.NewRequest("POST", base, bytes.NewReader(body))
		if err != nil {
			f.Fatal(err)
		}
		r.Header.Set(hdrAmzInvocationType, "RequestResponse")
		r.Header.Set("Content-Type", "application/json")
		return r
	}
	check := sigV4Check{key: fuzzKey, service: "lambda", now: fuzzNow}
	orig := newReq()
	if err := sdkSignAt(orig, body, fuzzKey, "us-east-1", fuzzNow); err != nil {
		f.Fatal(err)
	}
	origAuth, err := check.verify(orig, body)
	if err != nil {
		f.Fatalf("the unchanged request is refused: %v", err)
	}
	f.Fuzz(func(t *testing.T, op uint8, s string, b []byte) {
		r := orig.Clone(context.Background())
		r.Header = orig.Header.Clone()
		rbody := body
		const ops = 10
		switch op % ops {
		case 0: // path
			u, err := url.Parse(base[:strings.Index(base, "?")] + s + "?Qualifier=1")
			if err != nil {
				return
			}
			r.URL = u
		case 1: // query
			r.URL.RawQuery = s
		case 2: // a signed header
			r.Header.Set(hdrAmzInvocationType, s)
		case 3: // body
			rbody = b
			r.ContentLength = int64(len(b))
		case 4: // method
			if s == "" || strings.ContainsAny(s, " \t\r\n") {
				return
			}
			r.Method = s
		case 5: // host
			r.Host = s
		case 6: // X-Amz-Date
			r.Header.Set("X-Amz-Date", s)
		case 7: // one signature digit
			a := r.Header.Get("Authorization")
			i := strings.LastIndex(a, "Signature=") + len("Signature=") + len(s)%64
			c := byte('0')
			if len(b) > 0 {
				c = b[0]
			}
			r.Header.Set("Authorization", a[:i]+string(c)+a[i+1:])
		case 8: // another signed header
			r.Header.Set("Content-Type", s)
		case 9: // the region of the credential scope
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/us-east-1/", "/"+s+"/", 1))
		}
		got, err := check.verify(r, rbody)
		if err != nil {
			var se *sigV4Error
			if !errors.As(err, &se) {
				t.Fatalf("refusal %v is not a sigV4Error", err)
			}
			return
		}
		switch op % ops {
		case 6:
			if s != orig.Header.Get("X-Amz-Date") {
				t.Fatalf("X-Amz-Date %q accepted (signed %q)", s, orig.Header.Get("X-Amz-Date"))
			}
			return
		case 7, 9:
			if got.Signature != origAuth.Signature || got.Region != origAuth.Region || got.AccessKeyID != origAuth.AccessKeyID {
				t.Fatalf("changed Authorization accepted: %+v (signed %+v)", got, origAuth)
			}
			return
		}
		if otherSpace(s) && (op%ops == 2 || op%ops == 5 || op%ops == 8) {
			// amber folds tabs in header values like botocore does;
			// aws-sdk-go-v2 folds only spaces: the two signers disagree.
			return
		}
		// The SDK's view: sign the changed request afresh.
		again := r.Clone(context.Background())
		again.Header = r.Header.Clone()
		again.Header.Del("Authorization")
		if err := sdkSignAt(again, rbody, fuzzKey, "us-east-1", fuzzNow); err != nil {
			t.Fatalf("changed request accepted, and the SDK cannot sign it: %v", err)
		}
		want, err := parseSigV4Auth(again.Header.Get("Authorization"))
		if err != nil {
			t.Fatal(err)
		}
		if want.Signature != origAuth.Signature {
			t.Fatalf("changed request accepted (op %d, %q, %q): the SDK signs it %s, the request carries %s\n%s %s host %q %v",
				op%ops, s, b, want.Signature, origAuth.Signature, r.Method, r.URL, r.Host, r.Header)
		}
	})
}

// FuzzRouteResponse: a function's answer behind an HTTP route, as API
// Gateway reads payload format 2.0. Properties: never panics; an accepted
// answer sets a real status, no header carrying a line break or NUL and no
// hop-by-hop header, and the body it promised.
func FuzzRouteResponse(f *testing.F) {
	for _, s := range []string{
		`{"statusCode":201,"headers":{"X-A":"1","Content-Length":"99"},"cookies":["a=1; Path=/"],"body":"made"}`,
		`{"statusCode":200,"body":"aGk=","isBase64Encoded":true}`,
		`{"statusCode":200,"body":"!!","isBase64Encoded":true}`,
		`{"statusCode":99}`, `{"statusCode":600}`, `{"statusCode":"200"}`, `{"statusCode":null}`,
		`{"statusCode":302,"headers":{"Location":"/x\r\nSet-Cookie: evil=1"}}`,
		`{"statusCode":200,"headers":{"Bad Name":"v","X\u0000":"v","Transfer-Encoding":"chunked"}}`,
		`{"statusCode":200,"cookies":["a=1\r\nX: y"]}`,
		`{"message":"hi"}`, `"just a string"`, `[1,2]`, `null`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		rec := httptest.NewRecorder()
		if err := writeHTTPResponse(rec, payload); err != nil {
			if !strings.HasPrefix(err.Error(), "malformed response") {
				t.Fatalf("error %v", err)
			}
			return
		}
		if rec.Code < 100 || rec.Code > 599 {
			t.Fatalf("status %d", rec.Code)
		}
		for k, vs := range rec.Header() {
			if routeHopHeaders[strings.ToLower(k)] {
				t.Fatalf("hop-by-hop header %q passed through", k)
			}
			if strings.ContainsAny(k, " \t\r\n:") {
				t.Fatalf("header name %q", k)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("header %q value %q", k, v)
				}
			}
		}
		var resp httpResponse
		var probe map[string]json.RawMessage
		if json.Unmarshal(payload, &probe) != nil || probe["statusCode"] == nil {
			if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), payload) {
				t.Fatalf("plain JSON answer became %d %q", rec.Code, rec.Body)
			}
			return
		}
		if err := json.Unmarshal(payload, &resp); err != nil {
			t.Fatalf("accepted an answer that does not decode: %v", err)
		}
		want := []byte(resp.Body)
		if resp.IsBase64Encoded {
			want, _ = base64.StdEncoding.DecodeString(resp.Body)
		}
		if resp.StatusCode >= 200 && rec.Code != resp.StatusCode {
			t.Fatalf("status %d, the function said %d", rec.Code, resp.StatusCode)
		}
		if resp.StatusCode >= 200 && !bytes.Equal(rec.Body.Bytes(), want) {
			t.Fatalf("body %q, the function said %q", rec.Body, want)
		}
	})
}

// FuzzRouteEvent: an HTTP request to /r/… becomes an API Gateway 2.0
// event. Properties: never panics; the event marshals to JSON; the body
// comes through byte for byte (as text when it is UTF-8 text, else
// base64); cookies are split and trimmed; header names are lower case.
func FuzzRouteEvent(f *testing.F) {
	for _, tc := range []struct{ path, query, ctype, cookie, body string }{
		{"/hello", "a=1&b=2&a=3", "application/json", "a=1; b=2", `{"x":1}`},
		{"/hello/x%2Fy/%2e%2e", "q=%zz", "text/plain; charset=utf-8", ";;", "caf\xc3\xa9"},
		{"/", "", "image/png", "", "\x89PNG\x00\xff"},
		{"/a", ";", "text/plain", "x", "\xff\xfe"},
		{"", "", "", "", ""},
	} {
		f.Add(tc.path, tc.query, tc.ctype, tc.cookie, []byte(tc.body))
	}
	rt := &Route{Function: "f", Path: "/hello"}
	f.Fuzz(func(t *testing.T, p, query, ctype, cookie string, body []byte) {
		target := "http://amber.test" + RoutePrefix + p
		if query != "" {
			target += "?" + query
		}
		r, err := http.NewRequest("POST", target, bytes.NewReader(body))
		if err != nil {
			return
		}
		r.Header.Set("Content-Type", ctype)
		r.Header.Set("Cookie", cookie)
		r.RemoteAddr = "192.0.2.1:1234"
		path := strings.TrimPrefix(r.URL.Path, RoutePrefix)
		rawPath := strings.TrimPrefix(r.URL.EscapedPath(), RoutePrefix)
		if path == "" {
			path, rawPath = "/", "/"
		}
		ev := buildHTTPEvent(r, rt, rawPath, path, body, "req-1", fuzzNow)
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("event does not marshal: %v", err)
		}
		var back httpEvent
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("event does not decode: %v", err)
		}
		got := []byte(back.Body)
		if back.IsBase64Encoded {
			if got, err = base64.StdEncoding.DecodeString(back.Body); err != nil {
				t.Fatalf("base64 body: %v", err)
			}
		} else if !utf8.ValidString(back.Body) {
			t.Fatalf("text body is not UTF-8")
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("body %q became %q (base64 %v)", body, got, back.IsBase64Encoded)
		}
		for _, c := range back.Cookies {
			if c == "" || strings.Contains(c, ";") || strings.TrimSpace(c) != c {
				t.Fatalf("cookie %q", c)
			}
		}
		for k := range back.Headers {
			if k != strings.ToLower(k) || k == "cookie" {
				t.Fatalf("header %q", k)
			}
		}
		// JSON strings are UTF-8: a path that decodes to invalid UTF-8
		// ("/%80") reaches the function with U+FFFD in requestContext.http.path;
		// rawPath keeps it exactly.
		if back.RawPath != rawPath || back.RequestContext.HTTP.Path != jsonString(path) || back.Version != "2.0" {
			t.Fatalf("paths %q %q", back.RawPath, back.RequestContext.HTTP.Path)
		}
	})
}

// jsonString is s after a JSON round trip (invalid UTF-8 becomes U+FFFD).
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	var out string
	json.Unmarshal(b, &out)
	return out
}

// FuzzNormalizeRoute: a route's path and methods. Properties: never
// panics; an accepted path is absolute, has no empty, . or .. segment and
// only the allowed characters; normalising is idempotent; a route matches
// its own path.
func FuzzNormalizeRoute(f *testing.F) {
	for _, tc := range [][2]string{
		{"/hello", "GET,post"}, {"/", "ANY"}, {"/a/b/", ""}, {"/a/../b", "GET"}, {"/a//b", ""}, {"a", ""},
		{"/%2e%2e", ""}, {"/a/.../b", ""}, {"/a/./b", ""}, {"/x", "FETCH"}, {"/x", " get , GET"},
	} {
		f.Add(tc[0], tc[1])
	}
	f.Fuzz(func(t *testing.T, p, methods string) {
		var ms []string
		if methods != "" {
			ms = strings.Split(methods, ",")
		}
		spec, err := normalizeRoute(RouteSpec{Path: p, Methods: ms})
		if err != nil {
			if !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("refusal %v", err)
			}
			return
		}
		q := spec.Path
		if !strings.HasPrefix(q, "/") || len(q) > 512 || (len(q) > 1 && strings.HasSuffix(q, "/")) {
			t.Fatalf("path %q → %q", p, q)
		}
		for i, seg := range strings.Split(q, "/") {
			if (i > 0 && seg == "" && q != "/") || seg == "." || strings.Contains(seg, "..") {
				t.Fatalf("path %q → %q has segment %q", p, q, seg)
			}
		}
		for _, c := range []byte(q) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._~/-", c) >= 0) {
				t.Fatalf("path %q → %q has byte %q", p, q, c)
			}
		}
		for _, m := range spec.Methods {
			if !routeMethods[m] {
				t.Fatalf("method %q", m)
			}
		}
		again, err := normalizeRoute(spec)
		if err != nil || !reflect.DeepEqual(again, spec) {
			t.Fatalf("normalising %+v again: %+v %v", spec, again, err)
		}
		if m, ok := matchRoute([]Route{{Function: "f", Path: q}}, q); !ok || m.Path != q {
			t.Fatalf("route %q does not match its own path", q)
		}
	})
}
