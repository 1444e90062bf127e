package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Headers carried by invoke responses, from agent to scheduler to client.
// The body is the function's raw response (or its error JSON).
const (
	HeaderRequestID     = "Amber-Request-Id"
	HeaderFunction      = "Amber-Function"
	HeaderVersion       = "Amber-Function-Version"
	HeaderAgent         = "Amber-Agent"
	HeaderInstance      = "Amber-Instance"
	HeaderStartKind     = "Amber-Start-Kind"
	HeaderInitMicros    = "Amber-Init-Duration-Us"
	HeaderRestoreMicros = "Amber-Restore-Duration-Us"
	HeaderDurationUs    = "Amber-Duration-Us"
	HeaderBilledMs      = "Amber-Billed-Ms"
	HeaderMemoryMB      = "Amber-Memory-Mb"
	HeaderMaxMemoryMB   = "Amber-Max-Memory-Mb"
	HeaderFunctionError = "Amber-Function-Error" // "Unhandled" when Payload is a FunctionError
)

// WriteHeaders sets the result's metadata on h.
func (r *InvokeResult) WriteHeaders(h http.Header) {
	h.Set(HeaderRequestID, r.RequestID)
	h.Set(HeaderFunction, r.Function)
	h.Set(HeaderVersion, strconv.Itoa(r.Version))
	h.Set(HeaderAgent, r.Agent)
	h.Set(HeaderInstance, r.Instance)
	h.Set(HeaderStartKind, string(r.StartKind))
	h.Set(HeaderInitMicros, strconv.FormatInt(r.InitDuration.Microseconds(), 10))
	if r.StartKind == StartRestore {
		h.Set(HeaderRestoreMicros, strconv.FormatInt(r.RestoreDuration.Microseconds(), 10))
	}
	h.Set(HeaderDurationUs, strconv.FormatInt(r.Duration.Microseconds(), 10))
	h.Set(HeaderBilledMs, strconv.FormatInt(r.BilledMs, 10))
	h.Set(HeaderMemoryMB, strconv.Itoa(r.MemoryMB))
	h.Set(HeaderMaxMemoryMB, strconv.Itoa(r.MaxMemoryMB))
	if r.FunctionError != "" {
		h.Set(HeaderFunctionError, r.FunctionError)
	}
}

// ReadInvokeHeaders fills an InvokeResult from response headers and body.
func ReadInvokeHeaders(h http.Header, body []byte) *InvokeResult {
	num := func(k string) int64 { n, _ := strconv.ParseInt(h.Get(k), 10, 64); return n }
	return &InvokeResult{
		RequestID:       h.Get(HeaderRequestID),
		Function:        h.Get(HeaderFunction),
		Version:         int(num(HeaderVersion)),
		Agent:           h.Get(HeaderAgent),
		Instance:        h.Get(HeaderInstance),
		StartKind:       StartKind(h.Get(HeaderStartKind)),
		InitDuration:    time.Duration(num(HeaderInitMicros)) * time.Microsecond,
		RestoreDuration: time.Duration(num(HeaderRestoreMicros)) * time.Microsecond,
		Duration:        time.Duration(num(HeaderDurationUs)) * time.Microsecond,
		BilledMs:        num(HeaderBilledMs),
		MemoryMB:        int(num(HeaderMemoryMB)),
		MaxMemoryMB:     int(num(HeaderMaxMemoryMB)),
		FunctionError:   h.Get(HeaderFunctionError),
		Payload:         body,
	}
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ReadPayload reads a synchronous invocation's payload, refusing one over
// MaxSyncPayload with ErrTooLarge.
func ReadPayload(r *http.Request) ([]byte, error) {
	payload, err := io.ReadAll(io.LimitReader(r.Body, MaxSyncPayload+1))
	if err != nil {
		return nil, Invalid("payload", "read: %v", err)
	}
	if len(payload) > MaxSyncPayload {
		return nil, fmt.Errorf("request payload is over %d bytes: %w", MaxSyncPayload, ErrTooLarge)
	}
	return payload, nil
}

// Asynchronous invocations: a request with HeaderInvocationType "Event" is
// queued and answered 202 with HeaderEventID (and an AsyncAccepted body);
// "DryRun" checks the function exists and answers 204.
const (
	HeaderInvocationType = "Amber-Invocation-Type"
	HeaderEventID        = "Amber-Event-Id"
)

// Log tails: a request to the invoke endpoint (scheduler or agent) with
// HeaderLogType "Tail" gets HeaderLogResult on its answer: the base64 of the
// last MaxLogTail bytes of that invocation's log lines (START … REPORT),
// what Lambda returns for X-Amz-Log-Type: Tail.
const (
	HeaderLogType   = "Amber-Log-Type"
	HeaderLogResult = "Amber-Log-Result"
	LogTypeTail     = "Tail"
	MaxLogTail      = 4 << 10
)
