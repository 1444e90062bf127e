package agent

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/amberfn/amber/api"
)

func TestLogStoreBounds(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name      string
		add       int
		text      string
		wantCount int // at most
	}{
		{"few lines kept", 10, "hello", 10},
		{"record cap", maxLogRecords + 500, "x", maxLogRecords},
		{"byte cap", 400, strings.Repeat("y", 4096), maxLogBytes / 4096},
		{"long lines cut", 3, strings.Repeat("z", 3*maxLogLine), 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newLogStore()
			for i := 0; i < tt.add; i++ {
				s.add(api.LogRecord{Time: t0.Add(time.Duration(i)), Function: "f", Text: tt.text})
			}
			got := s.since("f", time.Time{}, 0)
			// Over a bound the oldest eighth goes at once.
			if len(got) > tt.wantCount || len(got) < tt.wantCount*3/4 {
				t.Fatalf("kept %d records, want at most %d and not much fewer", len(got), tt.wantCount)
			}
			if last := got[len(got)-1]; !last.Time.Equal(t0.Add(time.Duration(tt.add - 1))) {
				t.Errorf("newest record lost: last is %v", last.Time)
			}
			for _, r := range got {
				if len(r.Text) > maxLogLine+16 {
					t.Fatalf("line of %d bytes kept", len(r.Text))
				}
			}
		})
	}
}

func TestLogStoreSinceAndUTF8(t *testing.T) {
	s := newLogStore()
	t0 := time.Unix(1_700_000_000, 0)
	s.add(api.LogRecord{Time: t0, Function: "f", Text: "a\xffb"})
	s.add(api.LogRecord{Time: t0.Add(time.Second), Function: "f", Text: "second"})
	s.add(api.LogRecord{Time: t0.Add(2 * time.Second), Function: "g", Text: "other"})
	if got := s.since("f", t0, 0); len(got) != 1 || got[0].Text != "second" {
		t.Errorf("since t0 = %+v", got)
	}
	all := s.since("f", time.Time{}, 0)
	if !utf8.ValidString(all[0].Text) {
		t.Errorf("invalid UTF-8 kept: %q", all[0].Text)
	}
	if got := s.since("f", time.Time{}, 1); len(got) != 1 || got[0].Text != "second" {
		t.Errorf("limit 1 = %+v, want the newest", got)
	}
	if got := s.since("none", time.Time{}, 0); got == nil || len(got) != 0 {
		t.Errorf("unknown function = %#v, want empty", got)
	}
}

func TestLines(t *testing.T) {
	for in, want := range map[string]int{"": 0, "\n": 0, "a": 1, "a\n": 1, "a\nb": 2, "a\n\nb\n": 3} {
		if got := len(lines([]byte(in))); got != want {
			t.Errorf("lines(%q) = %d, want %d", in, got, want)
		}
	}
}
