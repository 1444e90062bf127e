package remote

import (
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte("u:p:with:colons"))
	os.WriteFile(p, []byte(`{"auths":{
		"127.0.0.1:5000":{"auth":"`+auth+`"},
		"https://index.docker.io/v1/":{"username":"hub","password":"pw"},
		"http://reg.example.com/":{"identitytoken":"tok"}}}`), 0o600)
	creds, err := LoadCredentials(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, u, s string }{
		{"127.0.0.1:5000", "u", "p:with:colons"},
		{"registry-1.docker.io", "hub", "pw"},
		{"reg.example.com", "", "tok"},
		{"other:1", "", ""},
	} {
		u, s, _ := creds.lookup(tc.host)
		if u != tc.u || s != tc.s {
			t.Errorf("%s: %q %q, want %q %q", tc.host, u, s, tc.u, tc.s)
		}
	}
	if c, err := LoadCredentials(filepath.Join(dir, "missing.json")); err != nil || len(c) != 0 {
		t.Errorf("missing file: %v %v", c, err)
	}
	os.WriteFile(p, []byte(`{"auths":{"h":{"auth":"!!"}}}`), 0o600)
	if _, err := LoadCredentials(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("bad base64: %v, want an error naming the file", err)
	}
}

func withPlatform(t *testing.T, img v1.Image, arch string) v1.Image {
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestInspect(t *testing.T) {
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "amber" || p != "pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	auth := ggcr.WithAuth(&authn.Basic{Username: "amber", Password: "pw"})
	push := func(ref string, img v1.Image) string {
		r, _ := name.ParseReference(host+"/"+ref, name.Insecure)
		if err := ggcr.Write(r, img, auth); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		return d.String()
	}
	img, _ := random.Image(1000, 2)
	amd := withPlatform(t, img, "amd64")
	arm := withPlatform(t, img, "arm64")
	dAmd := push("fn:amd", amd)
	push("fn:arm", arm)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	ir, _ := name.ParseReference(host+"/fn:multi", name.Insecure)
	if err := ggcr.WriteIndex(ir, idx, auth); err != nil {
		t.Fatal(err)
	}
	dIdx, _ := idx.Digest()

	good := NewResolver(Credentials{host: {Username: "amber", Password: "pw"}}, nil)
	for _, tc := range []struct{ ref, digest string }{
		{host + "/fn:amd", dAmd},
		{host + "/fn@" + dAmd, dAmd},
		{host + "/fn:multi", dIdx.String()},
	} {
		res, err := Inspect(t.Context(), good, tc.ref)
		if err != nil {
			t.Errorf("%s: %v", tc.ref, err)
			continue
		}
		if res.Digest != tc.digest || res.Image != host+"/fn@"+tc.digest || res.Manifest != dAmd || res.Layers != 2 || res.Size < 2000 {
			t.Errorf("%s: %+v", tc.ref, res)
		}
	}
	for _, tc := range []struct {
		ref  string
		r    Credentials
		want string
	}{
		{host + "/fn:arm", Credentials{host: {Username: "amber", Password: "pw"}}, "is for linux/arm64, not linux/amd64"},
		{host + "/fn:amd", Credentials{host: {Username: "amber", Password: "bad"}}, "401"},
		{host + "/fn:amd", nil, "no basic auth credentials"},
		{host + "/fn:nope", Credentials{host: {Username: "amber", Password: "pw"}}, "not found"},
	} {
		_, err := Inspect(t.Context(), NewResolver(tc.r, nil), tc.ref)
		t.Logf("%s: %v", tc.ref, err)
		if err == nil || !strings.Contains(err.Error(), tc.ref) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming the reference and %q", tc.ref, err, tc.want)
		}
	}
}
