package scheduler

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AWS Signature Version 4, verified the way S3-compatible stores do it: the
// Lambda-compatible endpoint authenticates the AWS CLI and SDKs with an
// access key that amber issues (AccessKey), so they work unchanged.
//
// The key lives in DATA/aws-access-key.json (mode 0600), made on first
// start unless WithAccessKey gives one.

const (
	sigV4Algorithm = "AWS4-HMAC-SHA256"
	sigV4Terminal  = "aws4_request"
	amzDateFormat  = "20060102T150405Z"
	// maxClockSkew is how far a request's X-Amz-Date may be from the
	// scheduler's clock, as AWS allows.
	maxClockSkew = 15 * time.Minute
	skewText     = "15 min" // maxClockSkew as AWS words it
	// emptySHA256 is the hex SHA-256 of no bytes.
	emptySHA256     = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	unsignedPayload = "UNSIGNED-PAYLOAD"
	accessKeyFile   = "aws-access-key.json"
)

// AccessKey is an AWS-style static credential that amber issues.
type AccessKey struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

// WithAccessKey sets the access key the Lambda-compatible endpoint accepts,
// instead of the one made and kept in DATA/aws-access-key.json.
func WithAccessKey(id, secret string) Option {
	return func(s *Scheduler) { s.accessKey = &AccessKey{AccessKeyID: id, SecretAccessKey: secret} }
}

// AccessKey returns the access key id and secret the Lambda-compatible
// endpoint (POST /2015-03-31/functions/{name}/invocations) accepts.
func (s *Scheduler) AccessKey() AccessKey {
	if s.accessKey == nil {
		return AccessKey{}
	}
	return *s.accessKey
}

// loadAccessKey reads the data folder's access key, making one on first start.
func loadAccessKey(dir string) (*AccessKey, error) {
	p := filepath.Join(dir, accessKeyFile)
	if b, err := os.ReadFile(p); err == nil {
		var k AccessKey
		if err := json.Unmarshal(b, &k); err != nil || k.AccessKeyID == "" || k.SecretAccessKey == "" {
			return nil, fmt.Errorf("%s: not an access key (remove it to make a new one)", p)
		}
		return &k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k, err := newAccessKey()
	if err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(k, "", "  ")
	// O_EXCL: two schedulers racing on one folder do not end up with two keys.
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, os.ErrExist) {
		return loadAccessKey(dir)
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return k, f.Close()
}

// newAccessKey makes an access key shaped like AWS's: a 20-character id
// ("AMBR" and 16 base32 characters) and a 40-character secret.
func newAccessKey() (*AccessKey, error) {
	id := make([]byte, 10)
	secret := make([]byte, 30)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return &AccessKey{
		AccessKeyID:     "AMBR" + base32.StdEncoding.EncodeToString(id),
		SecretAccessKey: base64.StdEncoding.EncodeToString(secret),
	}, nil
}

// sigV4Error is a refused signature; Code is the exception name the AWS
// SDKs know.
type sigV4Error struct {
	Code, Message string
}

func (e *sigV4Error) Error() string { return e.Code + ": " + e.Message }

// Exception names for refused signatures.
const (
	errMissingAuth         = "MissingAuthenticationTokenException"
	errIncompleteSignature = "IncompleteSignatureException"
	errUnrecognizedClient  = "UnrecognizedClientException"
	errInvalidSignature    = "InvalidSignatureException"
)

func sigErr(code, format string, args ...any) *sigV4Error {
	return &sigV4Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// sigV4Auth is a parsed Authorization header.
type sigV4Auth struct {
	AccessKeyID   string
	Date          string // YYYYMMDD of the credential scope
	Region        string
	Service       string
	SignedHeaders []string // lower case, sorted
	Signature     string   // hex
}

func (a *sigV4Auth) scope() string {
	return a.Date + "/" + a.Region + "/" + a.Service + "/" + sigV4Terminal
}

// parseSigV4Auth parses
//
//	AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=hex
func parseSigV4Auth(h string) (*sigV4Auth, error) {
	if h == "" {
		return nil, sigErr(errMissingAuth, "Missing Authentication Token")
	}
	algo, rest, _ := strings.Cut(h, " ")
	if algo != sigV4Algorithm {
		return nil, sigErr(errIncompleteSignature, "Authorization header: algorithm %q is not supported; want %s", algo, sigV4Algorithm)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, sigErr(errIncompleteSignature, "Authorization header: %q is not KEY=VALUE", strings.TrimSpace(part))
		}
		fields[k] = v
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[k] == "" {
			return nil, sigErr(errIncompleteSignature, "Authorization header requires a '%s' parameter", k)
		}
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 || cred[0] == "" || cred[4] != sigV4Terminal {
		return nil, sigErr(errIncompleteSignature, "Credential %q: want ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request", fields["Credential"])
	}
	if _, err := time.Parse("20060102", cred[1]); err != nil {
		return nil, sigErr(errIncompleteSignature, "Credential date %q: want YYYYMMDD", cred[1])
	}
	sig := fields["Signature"]
	if len(sig) != 64 {
		return nil, sigErr(errIncompleteSignature, "Signature: want 64 hex characters")
	}
	if _, err := hex.DecodeString(sig); err != nil {
		return nil, sigErr(errIncompleteSignature, "Signature: want 64 hex characters")
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	for i, name := range signed {
		signed[i] = strings.ToLower(strings.TrimSpace(name))
		if signed[i] == "" {
			return nil, sigErr(errIncompleteSignature, "SignedHeaders %q has an empty name", fields["SignedHeaders"])
		}
	}
	sort.Strings(signed)
	if !containsString(signed, "host") {
		return nil, sigErr(errIncompleteSignature, "SignedHeaders must include host")
	}
	return &sigV4Auth{AccessKeyID: cred[0], Date: cred[1], Region: cred[2], Service: cred[3],
		SignedHeaders: signed, Signature: strings.ToLower(sig)}, nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// sigV4Check is what verification needs besides the request.
type sigV4Check struct {
	key     AccessKey
	service string // "" accepts any
	now     time.Time
	// mustSign are headers that change what the request does: when one
	// is present it must be among the signed headers, or a captured
	// request could be replayed with it added or changed.
	mustSign []string
}

// verifyHeaders checks everything about a signed request that does not
// need its body: the header's shape, the access key, the service, the
// date and the clock skew. The body's hash is checked by verify.
func (c sigV4Check) verifyHeaders(r *http.Request) (*sigV4Auth, time.Time, error) {
	auth, err := parseSigV4Auth(r.Header.Get("Authorization"))
	if err != nil {
		return nil, time.Time{}, err
	}
	if subtle.ConstantTimeCompare([]byte(auth.AccessKeyID), []byte(c.key.AccessKeyID)) != 1 {
		return nil, time.Time{}, sigErr(errUnrecognizedClient, "The security token included in the request is invalid.")
	}
	if c.service != "" && auth.Service != c.service {
		return nil, time.Time{}, sigErr(errInvalidSignature, "Credential should be scoped to correct service: '%s'.", c.service)
	}
	raw := r.Header.Get("X-Amz-Date")
	if raw == "" {
		return nil, time.Time{}, sigErr(errIncompleteSignature, "Authorization requires an X-Amz-Date header")
	}
	at, err := time.Parse(amzDateFormat, raw)
	if err != nil {
		return nil, time.Time{}, sigErr(errIncompleteSignature, "X-Amz-Date %q: want YYYYMMDD'T'HHMMSS'Z'", raw)
	}
	if !containsString(auth.SignedHeaders, "x-amz-date") {
		return nil, time.Time{}, sigErr(errIncompleteSignature, "SignedHeaders must include x-amz-date")
	}
	for _, name := range c.mustSign {
		if _, present := r.Header[http.CanonicalHeaderKey(name)]; present && !containsString(auth.SignedHeaders, strings.ToLower(name)) {
			return nil, time.Time{}, sigErr(errInvalidSignature, "The request carries %s but does not sign it: it must be among the SignedHeaders.", http.CanonicalHeaderKey(name))
		}
	}
	if at.Format("20060102") != auth.Date {
		return nil, time.Time{}, sigErr(errInvalidSignature, "Credential should be scoped to a valid date: %s is not the date of X-Amz-Date %s", auth.Date, raw)
	}
	now := c.now.UTC()
	switch skew := now.Sub(at); {
	case skew > maxClockSkew:
		return nil, time.Time{}, sigErr(errInvalidSignature, "Signature expired: %s is now earlier than %s (%s - %s.)",
			raw, now.Add(-maxClockSkew).Format(amzDateFormat), now.Format(amzDateFormat), skewText)
	case skew < -maxClockSkew:
		return nil, time.Time{}, sigErr(errInvalidSignature, "Signature not yet current: %s is still later than %s (%s + %s.)",
			raw, now.Add(maxClockSkew).Format(amzDateFormat), now.Format(amzDateFormat), skewText)
	}
	return auth, at, nil
}

// verify checks r's signature over body in constant time and returns the
// parsed header (its Region is the region the caller signed for).
func (c sigV4Check) verify(r *http.Request, body []byte) (*sigV4Auth, error) {
	auth, at, err := c.verifyHeaders(r)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	bodyHash := hex.EncodeToString(sum[:])
	payloadHash := bodyHash
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" {
		// The SDKs send it for S3 only; when present it is what was signed,
		// and it must be the body's. UNSIGNED-PAYLOAD is refused: the
		// body must be under the signature.
		if !strings.EqualFold(h, bodyHash) {
			return nil, sigErr(errInvalidSignature, "X-Amz-Content-Sha256 does not match the request body (UNSIGNED-PAYLOAD is not accepted)")
		}
		payloadHash = h
	}
	canonical, err := canonicalRequest(r, auth.SignedHeaders, payloadHash)
	if err != nil {
		return nil, err
	}
	want := sigV4Signature(c.key.SecretAccessKey, auth.Date, auth.Region, auth.Service, stringToSign(at, auth.scope(), canonical))
	if subtle.ConstantTimeCompare([]byte(want), []byte(auth.Signature)) != 1 {
		return nil, sigErr(errInvalidSignature, "The request signature we calculated does not match the signature you provided. "+
			"Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	return auth, nil
}

// canonicalRequest builds SigV4's canonical request of r.
func canonicalRequest(r *http.Request, signedHeaders []string, payloadHash string) (string, error) {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(canonicalURI(r.URL))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.RawQuery))
	b.WriteByte('\n')
	for _, name := range signedHeaders {
		var values []string
		switch name {
		case "host":
			host := r.Host
			if host == "" {
				host = r.URL.Host
			}
			values = []string{host}
		case "content-length":
			// net/http moves Content-Length out of the header map.
			if r.ContentLength >= 0 {
				values = []string{strconv.FormatInt(r.ContentLength, 10)}
			}
		case "transfer-encoding":
			values = r.TransferEncoding
		default:
			values = r.Header.Values(name)
		}
		if values == nil {
			return "", sigErr(errIncompleteSignature, "signed header %q is not in the request", name)
		}
		b.WriteString(name)
		b.WriteByte(':')
		for i, v := range values {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.Join(strings.Fields(v), " "))
		}
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signedHeaders, ";"))
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String(), nil
}

// canonicalURI is the request's path, URI-encoded as every AWS service but
// S3 signs it: the escaped path is encoded again ("double encoding"), '/'
// kept.
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	return awsEscape(p, false)
}

// canonicalQuery sorts the query's parameters by name, then value, each
// encoded the RFC 3986 way (space as %20).
func canonicalQuery(raw string) string {
	if raw == "" {
		return ""
	}
	type kv struct{ k, v string }
	var pairs []kv
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		pairs = append(pairs, kv{awsEscape(k, true), awsEscape(v, true)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// awsEscape percent-encodes every byte but A–Z a–z 0–9 - _ . ~ (and '/'
// unless slash is set), upper-case hex.
func awsEscape(s string, slash bool) string {
	const hexdig = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && !slash) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexdig[c>>4])
		b.WriteByte(hexdig[c&15])
	}
	return b.String()
}

func stringToSign(at time.Time, scope, canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return sigV4Algorithm + "\n" + at.UTC().Format(amzDateFormat) + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// sigV4SigningKey derives the signing key of a secret for one day, region
// and service.
func sigV4SigningKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, sigV4Terminal)
}

func sigV4Signature(secret, date, region, service, toSign string) string {
	return hex.EncodeToString(hmacSHA256(sigV4SigningKey(secret, date, region, service), toSign))
}
