package api

import (
	"errors"
	"strings"
	"testing"
)

func TestParseImageRef(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct{ in, want, name string }{
		{"busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox"},
		{"team/fn:v1", "docker.io/team/fn:v1", "docker.io/team/fn"},
		{"127.0.0.1:5000/fn", "127.0.0.1:5000/fn:latest", "127.0.0.1:5000/fn"},
		{"localhost/a/b:1.0", "localhost/a/b:1.0", "localhost/a/b"},
		{"reg.example.com/a-b/c_d:tag@" + d, "reg.example.com/a-b/c_d:tag@" + d, "reg.example.com/a-b/c_d"},
		{"127.0.0.1:5000/fn@" + d, "127.0.0.1:5000/fn@" + d, "127.0.0.1:5000/fn"},
	} {
		r, err := ParseImageRef(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if r.String() != tc.want || r.Name() != tc.name {
			t.Errorf("%s: %s (name %s), want %s (%s)", tc.in, r, r.Name(), tc.want, tc.name)
		}
		if p := r.Pinned(d); p != tc.name+"@"+d {
			t.Errorf("%s: pinned %s", tc.in, p)
		}
	}
	for _, bad := range []string{"", "UPPER/x", "http://reg/x", "reg:5000/x@sha256:12", "reg:5000/x:t@g", "a b", "reg:5000/", "reg:5000/x/:t", "reg:99999999/x", strings.Repeat("a", 300)} {
		if r, err := ParseImageRef(bad); err == nil {
			t.Errorf("%q: parsed as %s, want an error", bad, r)
		}
	}
}

func TestValidateImage(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		in     string
		pinned bool
		ok     bool
	}{
		{d, true, true},
		{"sha256:abc", false, false},
		{"reg:5000/fn:v1", false, true},
		{"reg:5000/fn:v1", true, false},
		{"reg:5000/fn@" + d, true, true},
		{"reg:5000/fn:v1@" + d, true, false}, // the stored form has no tag
		{"Not A Ref", false, false},
	} {
		err := ValidateImage("image", tc.in, tc.pinned)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateImage(%q, pinned=%v) = %v, want ok=%v", tc.in, tc.pinned, err, tc.ok)
		}
		var fe *FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "image") {
			t.Errorf("%q: %v does not name the image field", tc.in, err)
		}
	}
	spec := FunctionSpec{Name: "f", Image: "reg:5000/fn:v1", MemoryMB: 128, Timeout: Duration(DefaultTimeout)}
	if err := spec.Validate(); err == nil {
		t.Error("a spec with an unpinned reference validated")
	}
	spec.Image = "reg:5000/fn@" + d
	spec.ImageRef = "reg:5000/fn:v1"
	if err := spec.Validate(); err != nil {
		t.Errorf("pinned spec: %v", err)
	}
	spec.ImageRef = "BAD REF"
	if err := spec.Validate(); err == nil {
		t.Error("a bad image_ref validated")
	}
}
