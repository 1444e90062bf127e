// Command hello is a function written exactly as for AWS Lambda's custom
// runtime (provided.al2023): aws-lambda-go's lambda.Start drives the Lambda
// Runtime API at $AWS_LAMBDA_RUNTIME_API, which amber-init serves inside
// each instance. Nothing here knows about amber.
//
// Build it as a static binary named bootstrap and pack it with amber build;
// see README.md.
package main

import (
	"context"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// Event is the invocation payload.
type Event struct {
	Name string `json:"name"`
	// Fail makes the handler return a function error.
	Fail bool `json:"fail"`
}

// Response is what the function returns.
type Response struct {
	Message        string `json:"message"`
	Function       string `json:"function"`
	RequestID      string `json:"request_id"`
	DeadlineMsLeft int64  `json:"deadline_ms_left"`
}

// RequestedFailure is the function error returned for {"fail": true}.
// aws-lambda-go reports its type name as the errorType.
type RequestedFailure struct{ Name string }

func (e *RequestedFailure) Error() string { return "failing as asked, " + e.Name }

func handler(ctx context.Context, ev Event) (Response, error) {
	name := ev.Name
	if name == "" {
		name = "world"
	}
	if ev.Fail {
		return Response{}, &RequestedFailure{Name: name}
	}
	resp := Response{
		Message:  "hello, " + name,
		Function: lambdacontext.FunctionName,
	}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		resp.RequestID = lc.AwsRequestID
	}
	if deadline, ok := ctx.Deadline(); ok {
		resp.DeadlineMsLeft = time.Until(deadline).Milliseconds()
	}
	return resp, nil
}

func main() {
	lambda.Start(handler)
}
