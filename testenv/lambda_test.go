package testenv_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"

	"github.com/amberfn/amber/testenv"
)

// TestLambdaAPIWithSDK drives the Lambda-compatible endpoint of a real
// cluster with aws-sdk-go-v2's Lambda client, configured from the cluster's
// DIR/aws-credentials the way a user would, and with the AWS CLI when it
// is installed.
func TestLambdaAPIWithSDK(t *testing.T) {
	f := cluster(t)
	c := f.cluster.Client()
	// Its own name: the shared fixture's "hello" is watched for cold starts elsewhere.
	deploy(t, c, "awshello", f.images["hello"])
	ctx := t.Context()

	credFile := f.cluster.AWSCredentialsFile()
	fi, err := os.Stat(credFile)
	if err != nil {
		t.Fatalf("aws-credentials: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", credFile, fi.Mode().Perm())
	}
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithSharedCredentialsFiles([]string{credFile}),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedConfigProfile(testenv.AWSProfile),
		config.WithRegion("us-east-1"),
		config.WithRetryMaxAttempts(1),
	)
	if err != nil {
		t.Fatalf("load the [amber] profile: %v", err)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil || creds.AccessKeyID != f.cluster.Scheduler.AccessKey().AccessKeyID {
		t.Fatalf("profile credentials %q (%v); want the scheduler's key", creds.AccessKeyID, err)
	}
	client := lambda.NewFromConfig(cfg, func(o *lambda.Options) { o.BaseEndpoint = aws.String(f.cluster.SchedulerURL) })

	t.Run("RequestResponse", func(t *testing.T) {
		out, err := client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("awshello"), Payload: []byte(`{"name":"sdk"}`)})
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		var res struct {
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(out.Payload, &res); err != nil || res.Message != "hello, sdk" {
			t.Fatalf("payload %s (%v)", out.Payload, err)
		}
		id, _ := awsmiddleware.GetRequestIDMetadata(out.ResultMetadata)
		if out.StatusCode != 200 || out.FunctionError != nil || aws.ToString(out.ExecutedVersion) != "$LATEST" || id == "" || id != res.RequestID {
			t.Errorf("status %d, error %v, version %q, request id %q (function saw %q)", out.StatusCode, out.FunctionError, aws.ToString(out.ExecutedVersion), id, res.RequestID)
		}
	})

	t.Run("function error", func(t *testing.T) {
		out, err := client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("awshello"), Payload: []byte(`{"fail":true,"name":"sdk"}`)})
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		var fe struct {
			ErrorMessage string `json:"errorMessage"`
			ErrorType    string `json:"errorType"`
		}
		if aws.ToString(out.FunctionError) != "Unhandled" || json.Unmarshal(out.Payload, &fe) != nil || fe.ErrorMessage != "failing as asked, sdk" {
			t.Errorf("FunctionError %q, payload %s", aws.ToString(out.FunctionError), out.Payload)
		}
	})

	t.Run("log tail", func(t *testing.T) {
		out, err := client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("awshello"), Payload: []byte(`{}`), LogType: types.LogTypeTail})
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		tail, err := base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
		if err != nil {
			t.Fatalf("LogResult %q: %v", aws.ToString(out.LogResult), err)
		}
		id, _ := awsmiddleware.GetRequestIDMetadata(out.ResultMetadata)
		t.Logf("log tail:\n%s", tail)
		for _, want := range []string{"START RequestId: " + id, "END RequestId: " + id, "REPORT RequestId: " + id} {
			if !bytes.Contains(tail, []byte(want)) {
				t.Errorf("log tail does not contain %q", want)
			}
		}
		if len(tail) > 4096 {
			t.Errorf("log tail of %d bytes", len(tail))
		}
	})

	t.Run("DryRun", func(t *testing.T) {
		out, err := client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("awshello"), InvocationType: types.InvocationTypeDryRun})
		if err != nil || out.StatusCode != 204 {
			t.Fatalf("DryRun: %v %+v", err, out)
		}
		var rnf *types.ResourceNotFoundException
		_, err = client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("no-such-function"), InvocationType: types.InvocationTypeDryRun})
		if !errors.As(err, &rnf) {
			t.Errorf("DryRun of a missing function: %v; want ResourceNotFoundException", err)
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		key := f.cluster.Scheduler.AccessKey()
		bad := lambda.New(lambda.Options{
			BaseEndpoint: aws.String(f.cluster.SchedulerURL), Region: "us-east-1", Retryer: aws.NopRetryer{},
			Credentials: credentials.NewStaticCredentialsProvider(key.AccessKeyID, key.SecretAccessKey+"x", ""),
		})
		_, err := bad.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("awshello"), Payload: []byte(`{}`)})
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidSignatureException" {
			t.Fatalf("wrong secret: %v; want InvalidSignatureException", err)
		}
	})

	t.Run("HTTP route", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, "PUT", f.cluster.SchedulerURL+"/v1/functions/awshello/route", strings.NewReader(`{"path":"/awshello","methods":["GET"]}`))
		req.Header.Set("Authorization", "Bearer "+f.cluster.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("PUT route: %v %v", err, resp)
		}
		resp.Body.Close()
		resp, err = http.Get(f.cluster.SchedulerURL + "/r/awshello?x=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		// The event has no "name": the function greets the world, as JSON.
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(b), `"message":"hello, world"`) {
			t.Errorf("GET /r/awshello → %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
	})

	t.Run("AWS CLI", func(t *testing.T) {
		awsCLI, err := exec.LookPath("aws")
		if err != nil {
			testenv.Require(t, fmt.Errorf("the AWS CLI (aws) is not installed (.ci/install-deps installs awscli): %w", err))
		}
		env := []string{"AWS_SHARED_CREDENTIALS_FILE=" + credFile, "AWS_CONFIG_FILE=" + filepath.Join(t.TempDir(), "none"),
			"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
		version := exec.CommandContext(ctx, awsCLI, "--version")
		version.Env = env
		v, _ := version.CombinedOutput()
		t.Logf("%s", bytes.TrimSpace(v))
		args := []string{"--profile", testenv.AWSProfile, "--region", "us-east-1",
			"lambda", "invoke", "--endpoint-url", f.cluster.SchedulerURL, "--function-name", "awshello",
			"--payload", `{"name":"x"}`, "--log-type", "Tail"}
		// Version 2 reads --payload as base64 unless told otherwise; version 1
		// takes it raw and does not know the flag.
		if !bytes.HasPrefix(v, []byte("aws-cli/1.")) {
			args = append(args, "--cli-binary-format", "raw-in-base64-out")
		}
		out := filepath.Join(t.TempDir(), "out.json")
		cmd := exec.CommandContext(ctx, awsCLI, append(args, out)...)
		cmd.Env = env
		stdout, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("aws lambda invoke: %v\n%s\n%s", err, stdout, ee.Stderr)
			}
			t.Fatalf("aws lambda invoke: %v", err)
		}
		var meta struct {
			StatusCode      int
			ExecutedVersion string
			LogResult       string
		}
		if err := json.Unmarshal(stdout, &meta); err != nil || meta.StatusCode != 200 || meta.ExecutedVersion != "$LATEST" {
			t.Errorf("CLI output %s (%v)", stdout, err)
		}
		if tail, _ := base64.StdEncoding.DecodeString(meta.LogResult); !bytes.Contains(tail, []byte("REPORT RequestId: ")) {
			t.Errorf("CLI LogResult %q", tail)
		}
		b, err := os.ReadFile(out)
		if err != nil || !strings.Contains(string(b), `"message":"hello, x"`) {
			t.Errorf("out.json %s (%v)", b, err)
		}
	})
}
