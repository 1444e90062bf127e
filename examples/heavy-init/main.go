// Command heavy-init is a function whose init is expensive: it builds
// about 64 MB of state in about 1.5 s before taking its first event, the
// case amber's snapshots exist for. A restored instance skips all of it
// and still has the state, which the handler proves: it returns what init
// computed and, with {"verify": true}, checks the whole state again.
//
// HEAVY_INIT_MS and HEAVY_STATE_MB change the init time and state size.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"hash/crc32"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

// state is built once by init and kept resident: every page is written.
var state struct {
	data     []byte
	sum      uint32    // CRC-32C of data at the end of init
	passes   int       // mixing passes init managed in its time
	nonce    string    // random, made in init: the same in every restore of one snapshot
	builtAt  time.Time // when init finished
	initTook time.Duration
}

// served counts this instance's invocations (restored instances count apart).
var served atomic.Int64

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Event is the invocation payload.
type Event struct {
	Verify bool `json:"verify"` // recompute the checksum of the whole state
}

// Response is what the function returns.
type Response struct {
	StateBytes int    `json:"state_bytes"`
	Sum        uint32 `json:"sum"`
	Passes     int    `json:"passes"`
	Nonce      string `json:"nonce"`
	BuiltAt    string `json:"built_at"`
	InitMs     int64  `json:"init_ms"`
	Served     int64  `json:"served"` // invocations of this instance, this one included
	Verified   *bool  `json:"verified,omitempty"`
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

// build fills the state with a xorshift stream, then mixes it pass after
// pass until the init time is spent, so init does real work on every page.
func build(size int, spend time.Duration) {
	start := time.Now()
	data := make([]byte, size)
	x := uint64(time.Now().UnixNano()) | 1
	for i := 0; i+8 <= len(data); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := 0; j < 8; j++ {
			data[i+j] = byte(x >> (8 * j))
		}
	}
	passes := 0
	const chunk = 1 << 20
	for time.Since(start) < spend {
		off := (passes * chunk) % (len(data) - chunk + 1)
		seg := data[off : off+chunk]
		var acc byte = byte(passes)
		for i := range seg {
			acc = acc*31 + seg[i]
			seg[i] = acc
		}
		passes++
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	state.data = data
	state.sum = crc32.Checksum(data, castagnoli)
	state.passes = passes
	state.nonce = hex.EncodeToString(b)
	state.builtAt = time.Now()
	state.initTook = time.Since(start)
}

func handler(_ context.Context, ev Event) (Response, error) {
	r := Response{
		StateBytes: len(state.data), Sum: state.sum, Passes: state.passes, Nonce: state.nonce,
		BuiltAt: state.builtAt.UTC().Format(time.RFC3339Nano), InitMs: state.initTook.Milliseconds(),
		Served: served.Add(1),
	}
	if ev.Verify {
		ok := crc32.Checksum(state.data, castagnoli) == state.sum
		r.Verified = &ok
	}
	return r, nil
}

func main() {
	build(envInt("HEAVY_STATE_MB", 64)<<20, time.Duration(envInt("HEAVY_INIT_MS", 1500))*time.Millisecond)
	lambda.Start(handler)
}
