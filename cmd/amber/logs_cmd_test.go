package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/amberfn/amber/api"
)

// TestLogsCommandLimit: `amber logs -n` takes what the API takes and
// refuses more with an error naming the limit; it never prints nothing
// and succeeds.
func TestLogsCommandLimit(t *testing.T) {
	amber := cli(t)
	for _, tc := range []struct {
		n    string
		want error // nil: the scheduler's answer for a function that does not exist
	}{
		{"3000", api.ErrInvalid},
		{fmt.Sprint(api.MaxLogLines + 1), api.ErrInvalid},
		{"0", api.ErrInvalid},
		{fmt.Sprint(api.MaxLogLines), api.ErrNotFound},
	} {
		t.Run(tc.n, func(t *testing.T) {
			out, _, err := amber("logs", "ghost", "-n", tc.n)
			if !errors.Is(err, tc.want) || out != "" {
				t.Fatalf("amber logs -n %s: %q, %v; want %v", tc.n, out, err, tc.want)
			}
			if tc.want == api.ErrInvalid && !strings.Contains(err.Error(), fmt.Sprint(api.MaxLogLines)) {
				t.Fatalf("the refusal does not name the limit: %v", err)
			}
		})
	}
}
