package api

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzFunctionSpec decodes a deploy body into a FunctionSpec the way the
// scheduler does (encoding/json, one value) and validates it. Properties:
// never panics; a refusal is a FieldError naming a field; whatever is
// accepted holds the documented limits (checked here without the
// validator's own regexps) and survives a JSON round trip unchanged and
// still valid.
func FuzzFunctionSpec(f *testing.F) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	for _, s := range []string{
		`{"name":"hello","image":"` + digest + `","memory_mb":128,"timeout":"3s"}`,
		`{"name":"a","image":"` + digest + `","memory_mb":10240,"timeout":900000000000,"env":{"A_1":"x","_b":""}}`,
		`{"name":"hello","image":"registry.example.com/fn/hello@` + digest + `","image_ref":"registry.example.com/fn/hello:v1","memory_mb":256,"timeout":"1s"}`,
		`{"name":"../x","image":"` + digest + `","memory_mb":128,"timeout":"3s"}`,
		`{"name":"HELLO","image":"` + digest + `","memory_mb":127,"timeout":"3s"}`,
		`{"name":"h","image":"` + digest + `","memory_mb":128,"timeout":"900.000000001s"}`,
		`{"name":"h","image":"` + digest + `","memory_mb":128,"timeout":"3s","env":{"AWS_LAMBDA_X":"1"}}`,
		`{"name":"h","image":"` + digest + `","memory_mb":128,"timeout":"3s","env":{"A=B":"1"}}`,
		`{"name":"h","image":"` + digest + `","memory_mb":128,"timeout":"3s","env":{"A":"nul\u0000here"}}`,
		`{"name":"h","image":"sha256:../../etc/passwd","memory_mb":128,"timeout":"3s"}`,
		`{"name":"\u0430bc","image":"` + digest + `","memory_mb":128,"timeout":"3s"}`,
		`{"name":"h","image":"` + digest + `","memory_mb":1e3,"timeout":"-3s"}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var spec FunctionSpec
		if err := json.Unmarshal(body, &spec); err != nil {
			return
		}
		err := spec.Validate()
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" || fe.Reason == "" || !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal %v (%T) is not a FieldError naming a field", err, err)
			}
			return
		}
		checkSpecInvariants(t, &spec)
		b, err := json.Marshal(&spec)
		if err != nil {
			t.Fatalf("accepted spec does not marshal: %v", err)
		}
		var back FunctionSpec
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("accepted spec does not decode back: %v: %s", err, b)
		}
		if len(back.Env) == 0 && len(spec.Env) == 0 {
			back.Env, spec.Env = nil, nil
		}
		if !reflect.DeepEqual(spec, back) {
			t.Fatalf("round trip changed the spec:\n%#v\n%#v", spec, back)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("round-tripped spec refused: %v", err)
		}
	})
}

// checkSpecInvariants restates the documented limits of an accepted spec.
func checkSpecInvariants(t *testing.T, s *FunctionSpec) {
	t.Helper()
	if n := len(s.Name); n < 1 || n > 63 {
		t.Fatalf("accepted name %q of %d bytes", s.Name, n)
	}
	for _, c := range []byte(s.Name) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			t.Fatalf("accepted name %q has byte %q", s.Name, c)
		}
	}
	if s.MemoryMB < 128 || s.MemoryMB > 10240 {
		t.Fatalf("accepted memory %d MB", s.MemoryMB)
	}
	if d := time.Duration(s.Timeout); d < time.Second || d > 900*time.Second {
		t.Fatalf("accepted timeout %s", d)
	}
	if !IsArchiveDigest(s.Image) {
		ref, err := ParseImageRef(s.Image)
		if err != nil || ref.Digest == "" || ref.Tag != "" {
			t.Fatalf("accepted image %q: neither an archive digest nor a pinned reference (%+v, %v)", s.Image, ref, err)
		}
	}
	if strings.ContainsAny(s.Image, "\x00\n ") || strings.Contains(s.Image, "..") {
		t.Fatalf("accepted image %q", s.Image)
	}
	for k, v := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || ('0' <= k[0] && k[0] <= '9') {
			t.Fatalf("accepted env key %q", k)
		}
		for _, c := range []byte(k) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
				t.Fatalf("accepted env key %q has byte %q", k, c)
			}
		}
		if strings.HasPrefix(k, "AWS_LAMBDA_") || k == "_HANDLER" || k == "LAMBDA_TASK_ROOT" {
			t.Fatalf("accepted reserved env key %q", k)
		}
		// A process environment is NUL-terminated strings.
		if strings.ContainsRune(v, 0) {
			t.Fatalf("accepted env value of %q with a NUL byte", k)
		}
	}
}
