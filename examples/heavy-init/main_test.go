package main

import (
	"context"
	"testing"
	"time"
)

func TestBuildAndVerify(t *testing.T) {
	build(2<<20, 20*time.Millisecond)
	if len(state.data) != 2<<20 || state.passes == 0 || state.nonce == "" {
		t.Fatalf("state: %d bytes, %d passes, nonce %q", len(state.data), state.passes, state.nonce)
	}
	r, err := handler(context.Background(), Event{Verify: true})
	if err != nil || r.Verified == nil || !*r.Verified || r.Served != 1 || r.Sum != state.sum {
		t.Fatalf("handler = %+v, %v", r, err)
	}
	state.data[12345]++
	r, _ = handler(context.Background(), Event{Verify: true})
	if *r.Verified || r.Served != 2 {
		t.Fatalf("after damage: %+v", r)
	}
}
