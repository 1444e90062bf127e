package initd

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/amberfn/amber/api"
)

// encodeFrame is a frame as FrameWriter puts it on the wire.
func encodeFrame(tb testing.TB, f api.Frame) []byte {
	var buf bytes.Buffer
	if err := api.NewFrameWriter(&buf).Write(f); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzReadFrame checks api.ReadFrame never panics, fails only with its
// documented errors, and that what it accepts survives a round trip.
func FuzzReadFrame(f *testing.F) {
	seeds := []api.Frame{
		{Kind: api.FrameInvoke, Meta: api.FrameMeta{RequestID: "r1", DeadlineMs: 1700000000000, FunctionARN: "arn:x", TraceID: "t"}, Body: []byte(`{"a":1}`)},
		{Kind: api.FrameReady},
		{Kind: api.FrameLog, Meta: api.FrameMeta{Stream: "stderr"}, Body: []byte("line\n")},
		{Kind: api.FrameExit, Meta: api.FrameMeta{ExitCode: 2, Reason: "exit status 2"}, Body: []byte("boom")},
	}
	for _, s := range seeds {
		f.Add(encodeFrame(f, s))
	}
	two := append(encodeFrame(f, seeds[0]), encodeFrame(f, seeds[1])...)
	f.Add(two)
	f.Add([]byte{})
	f.Add([]byte("I\x00\x00"))                                     // truncated header
	f.Add([]byte("Z\x00\x00\x00\x00\x00\x00\x00\x00"))             // unknown kind
	f.Add([]byte("I\x00\x00\x00\x02\x00\x00\x00\x00{"))            // truncated meta
	f.Add([]byte("I\x00\x00\x00\x02\x00\x00\x00\x00[]"))           // meta not an object
	f.Add([]byte("I\xff\xff\xff\xff\x00\x00\x00\x00"))             // meta too large
	f.Add([]byte("R\x00\x00\x00\x02\x00\x00\x00\x05{}abc"))        // body truncated
	f.Add([]byte("E\x00\x00\x00\x0b\x00\x00\x00\x00{\"id\":123}")) // wrong meta type

	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			fr, err := api.ReadFrame(r)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, api.ErrBadFrame) && !errors.Is(err, api.ErrFrameTooLarge) {
					t.Fatalf("ReadFrame: undocumented error %v", err)
				}
				return
			}
			if len(fr.Body) > api.MaxFrameBody {
				t.Fatalf("body of %d bytes accepted", len(fr.Body))
			}
			var buf bytes.Buffer
			if err := api.NewFrameWriter(&buf).Write(fr); err != nil {
				// Re-encoding can grow meta past its limit (JSON escaping).
				if errors.Is(err, api.ErrFrameTooLarge) {
					continue
				}
				t.Fatalf("re-encode: %v", err)
			}
			again, err := api.ReadFrame(&buf)
			if err != nil {
				t.Fatalf("re-read: %v", err)
			}
			if !reflect.DeepEqual(fr, again) {
				t.Fatalf("round trip changed the frame:\n%+v\n%+v", fr, again)
			}
		}
	})
}
