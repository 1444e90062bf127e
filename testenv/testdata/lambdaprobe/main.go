// lambdaprobe is an aws-lambda-go function the conformance tests run in a
// real container: it reports what a Lambda runtime sees, and misbehaves on
// request.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Do    string `json:"do"`    // "", "error", "panic", "exit", "big", "print"
	Bytes int    `json:"bytes"` // for "big"
}

type report struct {
	Env          map[string]string `json:"env"`
	FunctionName string            `json:"function_name"`
	Version      string            `json:"version"`
	MemoryMB     int               `json:"memory_mb"`
	RequestID    string            `json:"request_id"`
	ARN          string            `json:"arn"`
	DeadlineMs   int64             `json:"deadline_ms"`
	UID          int               `json:"uid"`
	Cwd          string            `json:"cwd"`
	Payload      string            `json:"payload,omitempty"`
}

func handler(ctx context.Context, ev event) (*report, error) {
	switch ev.Do {
	case "error":
		return nil, errors.New("probe failed on purpose")
	case "panic":
		panic("probe panicked on purpose")
	case "exit":
		fmt.Fprintln(os.Stderr, "probe exiting with 7")
		os.Exit(7)
	case "print":
		fmt.Println("probe says hello on stdout")
		fmt.Fprintln(os.Stderr, "probe says hello on stderr")
	}
	r := &report{Env: map[string]string{}, UID: os.Getuid()}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "LAMBDA_") || k == "TZ" || k == "_HANDLER" || strings.HasPrefix(k, "PROBE_") {
			r.Env[k] = v
		}
	}
	r.FunctionName = lambdacontext.FunctionName
	r.Version = lambdacontext.FunctionVersion
	r.MemoryMB = lambdacontext.MemoryLimitInMB
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		r.RequestID = lc.AwsRequestID
		r.ARN = lc.InvokedFunctionArn
	}
	if d, ok := ctx.Deadline(); ok {
		r.DeadlineMs = time.Until(d).Milliseconds()
	}
	r.Cwd, _ = os.Getwd()
	if ev.Do == "big" {
		r.Payload = strings.Repeat("x", ev.Bytes)
	}
	return r, nil
}

func main() { lambda.Start(handler) }
