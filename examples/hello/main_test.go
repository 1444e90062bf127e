package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

func TestHandler(t *testing.T) {
	lambdacontext.FunctionName = "hello-test"
	tests := []struct {
		name        string
		payload     string
		wantMessage string
		wantFailure bool
	}{
		{name: "named", payload: `{"name":"amber"}`, wantMessage: "hello, amber"},
		{name: "default name", payload: `{}`, wantMessage: "hello, world"},
		{name: "empty name", payload: `{"name":""}`, wantMessage: "hello, world"},
		{name: "function error", payload: `{"name":"x","fail":true}`, wantFailure: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-123"})
			ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()

			// Through aws-lambda-go's handler, so the JSON on the wire
			// is what is checked.
			out, err := lambda.NewHandler(handler).Invoke(ctx, []byte(tt.payload))
			if tt.wantFailure {
				var rf *RequestedFailure
				if !errors.As(err, &rf) {
					t.Fatalf("Invoke error = %v (%T), want *RequestedFailure", err, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("response %s: %v", out, err)
			}
			if got["message"] != tt.wantMessage || got["function"] != "hello-test" || got["request_id"] != "req-123" {
				t.Errorf("response = %s", out)
			}
			left, ok := got["deadline_ms_left"].(float64)
			if !ok || left <= 0 || left > 3000 {
				t.Errorf("deadline_ms_left = %v, want in (0, 3000]", got["deadline_ms_left"])
			}
		})
	}
}

func TestHandlerWithoutLambdaContext(t *testing.T) {
	resp, err := handler(context.Background(), Event{Name: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.RequestID != "" || resp.DeadlineMsLeft != 0 || resp.Message != "hello, bare" {
		t.Errorf("resp = %+v", resp)
	}
}
