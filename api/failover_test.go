package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// refusedURL is a loopback address nothing listens on.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// scheduler is a loopback HTTP server answering status (and a body for 2xx),
// counting what it was sent.
type fakeScheduler struct {
	srv   *httptest.Server
	hits  atomic.Int32
	bytes atomic.Int64
}

func newFakeScheduler(t *testing.T, status int) *fakeScheduler {
	f := &fakeScheduler{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		n, _ := io.Copy(io.Discard, r.Body)
		f.bytes.Store(n)
		switch {
		case status >= 300:
			WriteJSON(w, status, ErrorBody{Error: ErrorDetail{Code: "X", Message: "refused here"}})
		case r.URL.Path == "/v1/images":
			WriteJSON(w, status, ImageUpload{Digest: "sha256:" + strings.Repeat("a", 64), Size: n})
		case r.URL.Path == "/v1/agents/heartbeat":
			WriteJSON(w, status, HeartbeatReply{})
		case strings.HasSuffix(r.URL.Path, "/invoke"):
			w.WriteHeader(status)
			io.WriteString(w, `{"ok":true}`)
		default:
			WriteJSON(w, status, []AgentStatus{})
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func TestClientFailover(t *testing.T) {
	hb := Heartbeat{Name: "a1", URL: "http://127.0.0.1:1"}
	calls := map[string]func(context.Context, *Client) error{
		"agents":    func(ctx context.Context, c *Client) error { _, err := c.Agents(ctx); return err },
		"invoke":    func(ctx context.Context, c *Client) error { _, err := c.Invoke(ctx, "hello", []byte(`{}`)); return err },
		"heartbeat": func(ctx context.Context, c *Client) error { _, err := c.Heartbeat(ctx, hb); return err },
		// A body that cannot be rewound (a pipe, stdin).
		"upload": func(ctx context.Context, c *Client) error {
			_, err := c.UploadImage(ctx, io.MultiReader(strings.NewReader(strings.Repeat("x", 1000))))
			return err
		},
	}
	tests := []struct {
		name      string
		first     int // 0: refuses connections; else the status the first scheduler answers
		call      string
		wantFirst int32 // requests the first one saw
		wantNext  int32 // requests the second one saw
		wantErr   error
	}{
		{name: "read, first refuses", call: "agents", wantNext: 1},
		{name: "invoke, first refuses", call: "invoke", wantNext: 1},
		{name: "upload, first refuses", call: "upload", wantNext: 1},
		{name: "heartbeat, first refuses", call: "heartbeat", wantNext: 1},
		{name: "read, first 503", first: 503, call: "agents", wantFirst: 1, wantNext: 1},
		{name: "heartbeat, first 500", first: 500, call: "heartbeat", wantFirst: 1, wantNext: 1},
		{name: "invoke, first 503 is the answer", first: 503, call: "invoke", wantFirst: 1, wantErr: ErrUnavailable},
		{name: "invoke, first 502 is the answer", first: 502, call: "invoke", wantFirst: 1, wantErr: ErrUnavailable},
		{name: "read, first 404 is the answer", first: 404, call: "agents", wantFirst: 1, wantErr: ErrNotFound},
		{name: "heartbeat, first 401 is the answer", first: 401, call: "heartbeat", wantFirst: 1, wantErr: ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := newFakeScheduler(t, 200)
			firstURL := refusedURL(t)
			var first *fakeScheduler
			if tt.first != 0 {
				first = newFakeScheduler(t, tt.first)
				firstURL = first.srv.URL
			}
			c := NewClient(firstURL+"/ , "+next.srv.URL+"/", WithToken("tok"))
			err := calls[tt.call](context.Background(), c)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("%s: %v", tt.call, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("%s: err %v, want %v", tt.call, err, tt.wantErr)
			}
			if first != nil && first.hits.Load() != tt.wantFirst {
				t.Errorf("first scheduler saw %d requests, want %d", first.hits.Load(), tt.wantFirst)
			}
			if got := next.hits.Load(); got != tt.wantNext {
				t.Errorf("second scheduler saw %d requests, want %d", got, tt.wantNext)
			}
			if tt.call == "upload" && tt.wantNext == 1 && next.bytes.Load() != 1000 {
				t.Errorf("second scheduler got %d bytes of the upload, want 1000", next.bytes.Load())
			}
		})
	}
}

// The client keeps to the scheduler that answered: after a failover the
// next request goes straight there.
func TestClientFailoverSticks(t *testing.T) {
	first := newFakeScheduler(t, 503)
	next := newFakeScheduler(t, 200)
	c := NewClient(first.srv.URL + "," + next.srv.URL)
	ctx := context.Background()
	for range 3 {
		if _, err := c.Agents(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if first.hits.Load() != 1 || next.hits.Load() != 3 {
		t.Errorf("first saw %d, second %d; want 1 and 3", first.hits.Load(), next.hits.Load())
	}
}

// When no scheduler can be reached the error names every address tried.
func TestClientFailoverAllDown(t *testing.T) {
	a, b := refusedURL(t), refusedURL(t)
	_, err := NewClient(a + "," + b).State(context.Background())
	if err == nil {
		t.Fatal("State with no scheduler up: no error")
	}
	for _, u := range []string{a, b} {
		if !strings.Contains(err.Error(), strings.TrimPrefix(u, "http://")) {
			t.Errorf("error %q does not name %s", err, u)
		}
	}
}

func TestSplitURLs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"http://a:1", []string{"http://a:1"}},
		{"http://a:1/, http://b:2 ,,", []string{"http://a:1", "http://b:2"}},
		{"", nil},
	}
	for _, tt := range tests {
		got := SplitURLs(tt.in)
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("SplitURLs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
