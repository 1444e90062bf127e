package initd

import (
	"fmt"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	many := func(n int) string {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, "line %d\n", i)
		}
		return b.String()
	}
	tests := []struct {
		name   string
		writes []string
		max, n int
		want   string
	}{
		{"empty", nil, 64, 3, ""},
		{"one line no newline", []string{"boom"}, 64, 3, "boom"},
		{"fewer lines than n", []string{"a\nb\n"}, 64, 3, "a\nb"},
		{"last n lines", []string{many(5)}, 64, 2, "line 4\nline 5"},
		{"exactly n lines", []string{"a\nb\nc\n"}, 64, 3, "a\nb\nc"},
		{"split writes", []string{"hel", "lo\nwor", "ld\n"}, 64, 5, "hello\nworld"},
		{"byte cap drops oldest", []string{"0123456789", "abcdef"}, 8, 5, "89abcdef"},
		{"huge single write", []string{strings.Repeat("x", 100) + "\nend"}, 10, 5, "xxxxxx\nend"},
		{"blank lines kept", []string{"a\n\nb\n"}, 64, 2, "\nb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTail(tt.max)
			for _, w := range tt.writes {
				tl.Write([]byte(w))
			}
			if got := string(tl.Lines(tt.n)); got != tt.want {
				t.Errorf("Lines(%d) = %q, want %q", tt.n, got, tt.want)
			}
		})
	}
}
