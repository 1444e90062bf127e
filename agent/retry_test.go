package agent

import (
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestUnavailable(t *testing.T) {
	raw := status.Error(codes.Unavailable, "connection error: dial unix /x.sock: timeout")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"grpc status", raw, true},
		{"converted by the client", errdefs.FromGRPC(raw), true},
		{"converted and wrapped", fmt.Errorf("delete container: %w", errdefs.FromGRPC(raw)), true},
		{"not found", errdefs.FromGRPC(status.Error(codes.NotFound, "no such container")), false},
		{"plain", errors.New("boom"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := unavailable(tc.err); got != tc.want {
				t.Errorf("unavailable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
