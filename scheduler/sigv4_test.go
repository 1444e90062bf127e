package scheduler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// The example key of AWS's documentation and SigV4 test suite.
var exampleKey = AccessKey{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}

var suiteTime = time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)

// TestSigV4PublishedVectors verifies requests signed in AWS's published
// examples: the SigV4 test suite (get-vanilla, get-vanilla-query-order-key-case,
// post-vanilla) and the IAM ListUsers example of the signing guide.
func TestSigV4PublishedVectors(t *testing.T) {
	for _, tt := range []struct {
		name, method, url string
		headers           map[string]string
		auth              string
		canonicalSHA      string // hex SHA-256 of the canonical request, when published
	}{
		{
			name: "get-vanilla", method: "GET", url: "https://example.amazonaws.com/",
			auth: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
		},
		{
			name: "get-vanilla-query-order-key-case", method: "GET", url: "https://example.amazonaws.com/?Param2=value2&Param1=value1",
			auth: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
		},
		{
			name: "post-vanilla", method: "POST", url: "https://example.amazonaws.com/",
			auth: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
		},
		{
			name: "iam ListUsers (signing guide)", method: "GET", url: "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
			headers:      map[string]string{"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
			auth:         "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
			canonicalSHA: "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := func(auth string) *http.Request {
				r := httptest.NewRequest(tt.method, tt.url, nil)
				r.Header.Set("X-Amz-Date", "20150830T123600Z")
				for k, v := range tt.headers {
					r.Header.Set(k, v)
				}
				r.Header.Set("Authorization", auth)
				return r
			}
			check := sigV4Check{key: exampleKey, now: suiteTime.Add(time.Minute)}
			a, err := check.verify(req(tt.auth), nil)
			if err != nil {
				t.Fatalf("published signature refused: %v", err)
			}
			if a.Region != "us-east-1" {
				t.Errorf("region %q", a.Region)
			}
			if tt.canonicalSHA != "" {
				c, err := canonicalRequest(req(tt.auth), a.SignedHeaders, emptySHA256)
				if err != nil {
					t.Fatal(err)
				}
				if sum := sha256.Sum256([]byte(c)); hex.EncodeToString(sum[:]) != tt.canonicalSHA {
					t.Errorf("canonical request hash %x, want %s; canonical request:\n%s", sum, tt.canonicalSHA, c)
				}
			}
			// One changed hex digit of the signature is refused.
			bad := tt.auth[:len(tt.auth)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", tt.auth[len(tt.auth)-1])+1)%16])
			var se *sigV4Error
			if _, err := check.verify(req(bad), nil); !errors.As(err, &se) || se.Code != errInvalidSignature {
				t.Errorf("altered signature: %v, want %s", err, errInvalidSignature)
			}
		})
	}
}

// The signing-key derivation example of AWS's signing guide.
func TestSigV4SigningKey(t *testing.T) {
	got := hex.EncodeToString(sigV4SigningKey(exampleKey.SecretAccessKey, "20150830", "us-east-1", "iam"))
	if want := "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"; got != want {
		t.Errorf("signing key %s, want %s", got, want)
	}
}

// sdkSign signs r over body with aws-sdk-go-v2's signer.
func sdkSign(t *testing.T, r *http.Request, body []byte, key AccessKey, region, service string, at time.Time) {
	t.Helper()
	sum := sha256.Sum256(body)
	err := v4.NewSigner().SignHTTP(context.Background(),
		aws.Credentials{AccessKeyID: key.AccessKeyID, SecretAccessKey: key.SecretAccessKey},
		r, hex.EncodeToString(sum[:]), service, region, at)
	if err != nil {
		t.Fatal(err)
	}
}

// TestSigV4AgainstSDKSigner checks requests shaped like the Lambda SDK's,
// signed by aws-sdk-go-v2, sent over a real connection.
func TestSigV4AgainstSDKSigner(t *testing.T) {
	key := AccessKey{AccessKeyID: "AMBRTESTKEY0000000", SecretAccessKey: "s3cr3t/with+odd=chars"}
	now := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	var got error
	var gotAuth *sigV4Auth
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := new(bytes.Buffer)
		body.ReadFrom(r.Body)
		gotAuth, got = sigV4Check{key: key, service: "lambda", now: now}.verify(r, body.Bytes())
	}))
	defer srv.Close()
	for _, tt := range []struct {
		name, path, query, body string
		headers                 map[string]string
	}{
		{name: "invoke", path: "/2015-03-31/functions/hello/invocations", body: `{"name":"x"}`,
			headers: map[string]string{"X-Amz-Invocation-Type": "RequestResponse", "X-Amz-Log-Type": "Tail", "Content-Type": "application/json"}},
		{name: "empty body", path: "/2015-03-31/functions/hello/invocations"},
		{name: "qualifier $LATEST", path: "/2015-03-31/functions/hello/invocations", query: "Qualifier=%24LATEST", body: `{}`},
		{name: "arn in path", path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ahello/invocations", body: `1`},
		{name: "query order and spaces", path: "/x/a%20b", query: "b=2&a=2&a=1&c=x%20y&d=%2B", body: "null"},
		{name: "multi-value header", path: "/x", headers: map[string]string{"X-Amz-Meta": "a   b  "}, body: `"s"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := srv.URL + tt.path
			if tt.query != "" {
				u += "?" + tt.query
			}
			r, err := http.NewRequest(http.MethodPost, u, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			sdkSign(t, r, []byte(tt.body), key, "eu-central-1", "lambda", now)
			resp, err := srv.Client().Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got != nil {
				t.Fatalf("SDK-signed request refused: %v", got)
			}
			if gotAuth.Region != "eu-central-1" || gotAuth.AccessKeyID != key.AccessKeyID {
				t.Errorf("auth %+v", gotAuth)
			}
		})
	}
}

// TestSigV4Refusals covers each reason a request is turned away.
func TestSigV4Refusals(t *testing.T) {
	key := AccessKey{AccessKeyID: "AMBRKEY", SecretAccessKey: "secret"}
	now := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	body := []byte(`{"a":1}`)
	signed := func(mut func(r *http.Request, k *AccessKey, at *time.Time, service *string)) *http.Request {
		r := httptest.NewRequest("POST", "http://amber:7700/2015-03-31/functions/f/invocations", bytes.NewReader(body))
		k, at, service := key, now, "lambda"
		if mut != nil {
			mut(r, &k, &at, &service)
		}
		sdkSign(t, r, body, k, "us-east-1", service, at)
		return r
	}
	for _, tt := range []struct {
		name string
		req  *http.Request
		body []byte
		want string
	}{
		{"no Authorization", httptest.NewRequest("POST", "/x", nil), nil, errMissingAuth},
		{"other scheme", func() *http.Request {
			r := httptest.NewRequest("POST", "/x", nil)
			r.Header.Set("Authorization", "Bearer tok")
			return r
		}(), nil, errIncompleteSignature},
		{"no SignedHeaders", func() *http.Request {
			r := httptest.NewRequest("POST", "/x", nil)
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AMBRKEY/20250601/us-east-1/lambda/aws4_request, Signature="+strings.Repeat("0", 64))
			return r
		}(), nil, errIncompleteSignature},
		{"unknown access key", signed(func(_ *http.Request, k *AccessKey, _ *time.Time, _ *string) { k.AccessKeyID = "AKIAOTHER" }), body, errUnrecognizedClient},
		{"wrong secret", signed(func(_ *http.Request, k *AccessKey, _ *time.Time, _ *string) { k.SecretAccessKey = "guess" }), body, errInvalidSignature},
		{"other service", signed(func(_ *http.Request, _ *AccessKey, _ *time.Time, s *string) { *s = "s3" }), body, errInvalidSignature},
		{"16 minutes old", signed(func(_ *http.Request, _ *AccessKey, at *time.Time, _ *string) { *at = now.Add(-16 * time.Minute) }), body, errInvalidSignature},
		{"16 minutes ahead", signed(func(_ *http.Request, _ *AccessKey, at *time.Time, _ *string) { *at = now.Add(16 * time.Minute) }), body, errInvalidSignature},
		{"body changed", signed(nil), []byte(`{"a":2}`), errInvalidSignature},
		{"header changed after signing", func() *http.Request {
			r := signed(func(r *http.Request, _ *AccessKey, _ *time.Time, _ *string) {
				r.Header.Set("X-Amz-Invocation-Type", "Event")
			})
			r.Header.Set("X-Amz-Invocation-Type", "RequestResponse")
			return r
		}(), body, errInvalidSignature},
		{"path changed after signing", func() *http.Request {
			r := signed(nil)
			r.URL.Path = "/2015-03-31/functions/g/invocations"
			return r
		}(), body, errInvalidSignature},
		{"unsigned payload", func() *http.Request {
			r := signed(func(r *http.Request, _ *AccessKey, _ *time.Time, _ *string) {
				r.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
			})
			return r
		}(), body, errInvalidSignature},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sigV4Check{key: key, service: "lambda", now: now}.verify(tt.req, tt.body)
			var se *sigV4Error
			if !errors.As(err, &se) || se.Code != tt.want {
				t.Fatalf("verify: %v; want %s", err, tt.want)
			}
			t.Logf("%s", err)
		})
	}
	// Within the 15 minutes either way is fine.
	for _, d := range []time.Duration{-14 * time.Minute, 14 * time.Minute} {
		r := signed(func(_ *http.Request, _ *AccessKey, at *time.Time, _ *string) { *at = now.Add(d) })
		if _, err := (sigV4Check{key: key, service: "lambda", now: now}).verify(r, body); err != nil {
			t.Errorf("skew %s refused: %v", d, err)
		}
	}
}

func TestParseSigV4Auth(t *testing.T) {
	a, err := parseSigV4Auth("AWS4-HMAC-SHA256 Credential=AK/20250601/ap-south-1/lambda/aws4_request,SignedHeaders=X-Amz-Date;host;content-type,Signature=" + strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	if a.AccessKeyID != "AK" || a.Date != "20250601" || a.Region != "ap-south-1" || a.Service != "lambda" ||
		strings.Join(a.SignedHeaders, ";") != "content-type;host;x-amz-date" {
		t.Errorf("parsed %+v", a)
	}
	for _, h := range []string{
		"AWS4-HMAC-SHA256 Credential=AK/20250601/r/lambda/aws4_request, SignedHeaders=host;x-amz-date",
		"AWS4-HMAC-SHA256 Credential=AK/20250601/r/lambda, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("0", 64),
		"AWS4-HMAC-SHA256 Credential=AK/2025-06-01/r/lambda/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("0", 64),
		"AWS4-HMAC-SHA256 Credential=AK/20250601/r/lambda/aws4_request, SignedHeaders=x-amz-date, Signature=" + strings.Repeat("0", 64),
		"AWS4-HMAC-SHA256 Credential=AK/20250601/r/lambda/aws4_request, SignedHeaders=host, Signature=xyz",
		"AWS4-HMAC-SHA256 garbage",
	} {
		if _, err := parseSigV4Auth(h); err == nil {
			t.Errorf("accepted %q", h)
		}
	}
}

func TestAccessKeyIssuedAndKept(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(WithDataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	k1 := s1.AccessKey()
	s1.Close()
	if len(k1.AccessKeyID) != 20 || !strings.HasPrefix(k1.AccessKeyID, "AMBR") || len(k1.SecretAccessKey) != 40 {
		t.Errorf("access key %q / secret of %d characters", k1.AccessKeyID, len(k1.SecretAccessKey))
	}
	fi, err := os.Stat(filepath.Join(dir, accessKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	s2, err := New(WithDataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if s2.AccessKey() != k1 {
		t.Errorf("key changed across a restart")
	}
	s2.Close()
	s3, err := New(WithDataDir(dir), WithAccessKey("AKID", "SECRET"))
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if k := s3.AccessKey(); k.AccessKeyID != "AKID" || k.SecretAccessKey != "SECRET" {
		t.Errorf("WithAccessKey ignored: %+v", k)
	}
	// A broken key file is an error, not a silent new key.
	if err := os.WriteFile(filepath.Join(dir, accessKeyFile), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAccessKey(dir); err == nil {
		t.Error("empty key file accepted")
	}
}

// TestSigV4UnsignedBehaviourHeaders: a header that changes what the call
// does is refused when present but not signed, naming it; signed by the
// SDK's signer, it passes.
func TestSigV4UnsignedBehaviourHeaders(t *testing.T) {
	key := AccessKey{AccessKeyID: "AMBRKEY", SecretAccessKey: "secret"}
	now := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	body := []byte(`{"a":1}`)
	check := sigV4Check{key: key, service: "lambda", now: now, mustSign: lambdaSignedHeaders}
	for _, tc := range []struct{ header, value string }{
		{"X-Amz-Invocation-Type", "Event"},
		{"X-Amz-Log-Type", "Tail"},
		{"X-Amz-Client-Context", "e30="},
		{"x-amz-invocation-type", "DryRun"}, // any spelling
	} {
		t.Run(tc.header+" added after signing", func(t *testing.T) {
			r := httptest.NewRequest("POST", "http://amber:7700/2015-03-31/functions/f/invocations", bytes.NewReader(body))
			sdkSign(t, r, body, key, "us-east-1", "lambda", now)
			r.Header.Set(tc.header, tc.value)
			_, err := check.verify(r, body)
			var se *sigV4Error
			if !errors.As(err, &se) || se.Code != errInvalidSignature || !strings.Contains(se.Message, http.CanonicalHeaderKey(tc.header)) {
				t.Fatalf("verify: %v; want %s naming %s", err, errInvalidSignature, http.CanonicalHeaderKey(tc.header))
			}
		})
		t.Run(tc.header+" signed", func(t *testing.T) {
			r := httptest.NewRequest("POST", "http://amber:7700/2015-03-31/functions/f/invocations", bytes.NewReader(body))
			r.Header.Set(tc.header, tc.value)
			sdkSign(t, r, body, key, "us-east-1", "lambda", now)
			if _, err := check.verify(r, body); err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
	// Headers that do not change the call may go unsigned, as the SDKs
	// leave some out (User-Agent, X-Amzn-Trace-Id).
	r := httptest.NewRequest("POST", "http://amber:7700/2015-03-31/functions/f/invocations", bytes.NewReader(body))
	sdkSign(t, r, body, key, "us-east-1", "lambda", now)
	r.Header.Set("X-Amzn-Trace-Id", "Root=1-5e1b4151-5ac6c58f8a5d0a2e2b3c4d5e")
	r.Header.Set("User-Agent", "aws-cli/2")
	if _, err := check.verify(r, body); err != nil {
		t.Fatalf("verify with unsigned trace id and user agent: %v", err)
	}
}

// TestSigV4SkewMessages: a request dated too far back or ahead is refused
// with AWS's words for each.
func TestSigV4SkewMessages(t *testing.T) {
	key := AccessKey{AccessKeyID: "AMBRKEY", SecretAccessKey: "secret"}
	now := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		skew time.Duration
		want string
	}{
		{-16 * time.Minute, "Signature expired: 20250601T094400Z is now earlier than 20250601T094500Z (20250601T100000Z - 15 min.)"},
		{16 * time.Minute, "Signature not yet current: 20250601T101600Z is still later than 20250601T101500Z (20250601T100000Z + 15 min.)"},
	} {
		t.Run(tc.skew.String(), func(t *testing.T) {
			r := httptest.NewRequest("POST", "http://amber:7700/2015-03-31/functions/f/invocations", nil)
			sdkSign(t, r, nil, key, "us-east-1", "lambda", now.Add(tc.skew))
			_, err := sigV4Check{key: key, service: "lambda", now: now}.verify(r, nil)
			var se *sigV4Error
			if !errors.As(err, &se) || se.Code != errInvalidSignature || se.Message != tc.want {
				t.Fatalf("verify: %v\nwant %s: %s", err, errInvalidSignature, tc.want)
			}
		})
	}
}
