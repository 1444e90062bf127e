package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

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

// TestRetryUnavailable: a removal step is tried again while containerd
// is unreachable or a call hangs (each attempt has its own deadline), and
// not after any other error.
func TestRetryUnavailable(t *testing.T) {
	raw := status.Error(codes.Unavailable, "connection refused")
	boom := errors.New("boom")
	for _, tc := range []struct {
		name     string
		fails    []error // per attempt; nil = hang until the attempt's deadline
		want     error
		attempts int
	}{
		{"ok at once", []error{}, nil, 1},
		{"unavailable then ok", []error{raw, raw}, nil, 3},
		{"hang then ok", []error{nil}, nil, 2},
		{"other error", []error{boom}, boom, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			err := retryUnavailableFor(t.Context(), 50*time.Millisecond, func(ctx context.Context) error {
				n++
				if n > len(tc.fails) {
					return nil
				}
				if e := tc.fails[n-1]; e != nil {
					return e
				}
				<-ctx.Done()
				return ctx.Err()
			})
			if !errors.Is(err, tc.want) || n != tc.attempts {
				t.Fatalf("err %v after %d attempts, want %v after %d", err, n, tc.want, tc.attempts)
			}
		})
	}
}
