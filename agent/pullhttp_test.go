package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/amberfn/amber/api"
)

// pullingLauncher is the fake launcher with a PullImage that reports
// progress, failing for refs containing "bad".
type pullingLauncher struct{ launcher }

func (pullingLauncher) PullImage(_ context.Context, ref string, progress func(api.PullProgress)) error {
	progress(api.PullProgress{Status: "pulling", Bytes: 10, Total: 20})
	if strings.Contains(ref, "bad") {
		return errors.New("pull image " + ref + ": digest mismatch")
	}
	return nil
}

const pinned = "127.0.0.1:5000/fn@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestPullEndpointBadInput(t *testing.T) {
	t.Parallel()
	const token = "s3cret"
	e := newTestEnv(t, nil, WithToken(token))
	srv := httptest.NewServer(e.a.Handler())
	t.Cleanup(srv.Close)
	cases := []struct {
		name, auth, body string
		status           int
		field            string
	}{
		{"no token", "-", `{"image":"` + pinned + `"}`, http.StatusUnauthorized, ""},
		{"malformed", "", `{"image":`, http.StatusBadRequest, "body"},
		{"missing image", "", `{}`, http.StatusBadRequest, "image"},
		{"unpinned tag", "", `{"image":"127.0.0.1:5000/fn:v1"}`, http.StatusBadRequest, "image"},
		{"tag and digest", "", `{"image":"127.0.0.1:5000/fn:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}`, http.StatusBadRequest, "image"},
		{"archive digest", "", `{"image":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}`, http.StatusBadRequest, "image"},
		{"bad reference", "", `{"image":"UPPER/case@sha256:12"}`, http.StatusBadRequest, "image"},
		// The fake launcher cannot pull.
		{"no puller", "", `{"image":"` + pinned + `"}`, http.StatusServiceUnavailable, ""},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/images/pull", strings.NewReader(tc.body))
		if tc.auth != "-" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var eb api.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != tc.status || eb.Error.Field != tc.field {
			t.Errorf("%s: %d field %q (%s), want %d field %q", tc.name, resp.StatusCode, eb.Error.Field, eb.Error.Message, tc.status, tc.field)
		}
	}
}

func TestPullEndpointStream(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, nil)
	e.a.launch = pullingLauncher{e.a.launch}
	srv := httptest.NewServer(e.a.Handler())
	t.Cleanup(srv.Close)
	for _, ref := range []string{pinned, strings.Replace(pinned, "/fn@", "/bad@", 1)} {
		resp, err := http.Post(srv.URL+"/v1/images/pull", "application/json", strings.NewReader(`{"image":"`+ref+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != api.ContentTypeNDJSON {
			t.Fatalf("%s: %s %s", ref, resp.Status, resp.Header.Get("Content-Type"))
		}
		var lines []api.PullProgress
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var p api.PullProgress
			if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			lines = append(lines, p)
		}
		resp.Body.Close()
		if len(lines) < 2 || lines[1].Bytes != 10 || lines[1].Total != 20 {
			t.Errorf("%s: lines %+v, want progress 10/20", ref, lines)
		}
		last := lines[len(lines)-1]
		if bad := strings.Contains(ref, "bad"); bad && !strings.Contains(last.Error, ref) || !bad && !last.Done {
			t.Errorf("%s: last line %+v", ref, last)
		}
	}
}
