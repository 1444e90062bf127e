package ops

import (
	"context"
	"net"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/amberfn/amber/scheduler"
)

// The control plane check asks every scheduler for its engine's health:
// ok with a real one, FAIL naming the scheduler that does not answer.
func TestCheckControlPlane(t *testing.T) {
	s, err := scheduler.New(scheduler.WithDataDir(t.TempDir()), scheduler.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { srv.Close(); s.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	tests := []struct {
		name     string
		urls     []string
		token    string
		wantOK   bool
		wantInfo string
	}{
		{name: "one healthy", urls: []string{srv.URL}, token: "tok", wantOK: true, wantInfo: ", leader "},
		{name: "one down", urls: []string{srv.URL, down}, token: "tok", wantInfo: "scheduler " + down},
		{name: "wrong token", urls: []string{srv.URL}, token: "nope", wantInfo: "scheduler " + srv.URL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := checkControlPlane(context.Background(), tt.urls, tt.token)
			if c.OK != tt.wantOK || !strings.Contains(c.Info, tt.wantInfo) {
				t.Errorf("check %s; want ok=%v and info containing %q", c, tt.wantOK, tt.wantInfo)
			}
			if !c.OK && c.Fix == "" {
				t.Errorf("check %s has no fix", c)
			}
		})
	}
}
