package api

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// The agent and amber-init talk over the task's stdio in frames:
//
//	kind (1 byte) | meta length (uint32 BE) | body length (uint32 BE) | meta JSON | body
//
// Frames flow agent→init on stdin (FrameInvoke) and init→agent on stdout
// (everything else). Nothing else is ever written to those streams.

// FrameKind identifies a frame.
type FrameKind byte

const (
	FrameInvoke    FrameKind = 'I' // agent→init: Meta carries the invocation, Body the payload
	FrameReady     FrameKind = 'N' // init→agent: the runtime is parked on /next (first one ends init)
	FrameResponse  FrameKind = 'R' // init→agent: Body is the response for Meta.RequestID
	FrameError     FrameKind = 'E' // init→agent: Body is a FunctionError JSON for Meta.RequestID
	FrameInitError FrameKind = 'X' // init→agent: the runtime reported /runtime/init/error; Body is the error JSON
	FrameLog       FrameKind = 'L' // init→agent: runtime output; Meta.Stream is "stdout" or "stderr"
	FrameExit      FrameKind = 'Q' // init→agent: the runtime exited; Meta.Reason says how, Body has its last output
)

// Frame size limits; a frame beyond them is refused as ErrFrameTooLarge.
const (
	MaxFrameMeta = 64 << 10
	MaxFrameBody = 16 << 20
)

var (
	// ErrFrameTooLarge is returned for a frame whose lengths exceed the limits.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrBadFrame is returned for a frame that cannot be decoded.
	ErrBadFrame = errors.New("malformed frame")
)

// FrameMeta is the small JSON header of a frame. Only the fields that
// matter for a frame's kind are set.
type FrameMeta struct {
	RequestID       string `json:"id,omitempty"`
	DeadlineMs      int64  `json:"deadline_ms,omitempty"` // Unix milliseconds
	FunctionARN     string `json:"arn,omitempty"`
	TraceID         string `json:"trace,omitempty"`
	ClientContext   string `json:"client_context,omitempty"`
	CognitoIdentity string `json:"cognito_identity,omitempty"`
	ErrorType       string `json:"error_type,omitempty"`
	Stream          string `json:"stream,omitempty"`
	ExitCode        int    `json:"exit_code,omitempty"`
	Reason          string `json:"reason,omitempty"`
}

// Frame is one message between the agent and amber-init.
type Frame struct {
	Kind FrameKind
	Meta FrameMeta
	Body []byte
}

func validKind(k FrameKind) bool {
	switch k {
	case FrameInvoke, FrameReady, FrameResponse, FrameError, FrameInitError, FrameLog, FrameExit:
		return true
	}
	return false
}

// FrameWriter writes frames; it is safe for concurrent use.
type FrameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewFrameWriter returns a FrameWriter on w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// Write sends one frame as a single write.
func (fw *FrameWriter) Write(f Frame) error {
	meta, err := json.Marshal(f.Meta)
	if err != nil {
		return err
	}
	if len(meta) > MaxFrameMeta || len(f.Body) > MaxFrameBody {
		return fmt.Errorf("%w: meta %d bytes, body %d bytes", ErrFrameTooLarge, len(meta), len(f.Body))
	}
	buf := make([]byte, 9, 9+len(meta)+len(f.Body))
	buf[0] = byte(f.Kind)
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(meta)))
	binary.BigEndian.PutUint32(buf[5:9], uint32(len(f.Body)))
	buf = append(buf, meta...)
	buf = append(buf, f.Body...)
	fw.mu.Lock()
	defer fw.mu.Unlock()
	_, err = fw.w.Write(buf)
	return err
}

// ReadFrame reads one frame from r. It returns io.EOF only at a clean
// frame boundary, and ErrBadFrame or ErrFrameTooLarge (wrapped) for garbage.
func ReadFrame(r io.Reader) (Frame, error) {
	var hdr [9]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("%w: truncated header", ErrBadFrame)
		}
		return Frame{}, err
	}
	f := Frame{Kind: FrameKind(hdr[0])}
	if !validKind(f.Kind) {
		return Frame{}, fmt.Errorf("%w: unknown kind 0x%02x", ErrBadFrame, hdr[0])
	}
	ml := binary.BigEndian.Uint32(hdr[1:5])
	bl := binary.BigEndian.Uint32(hdr[5:9])
	if ml > MaxFrameMeta || bl > MaxFrameBody {
		return Frame{}, fmt.Errorf("%w: meta %d bytes, body %d bytes", ErrFrameTooLarge, ml, bl)
	}
	buf := make([]byte, int(ml)+int(bl))
	if _, err := io.ReadFull(r, buf); err != nil {
		return Frame{}, fmt.Errorf("%w: truncated frame: %v", ErrBadFrame, err)
	}
	if ml > 0 {
		if err := json.Unmarshal(buf[:ml], &f.Meta); err != nil {
			return Frame{}, fmt.Errorf("%w: meta: %v", ErrBadFrame, err)
		}
	}
	if bl > 0 {
		f.Body = buf[ml:]
	}
	return f, nil
}
