package initd

import (
	"bytes"
	"sync"
)

// Limits of the output kept for exit reports.
const (
	tailBytes = 4 << 10
	tailLines = 20
)

// tail keeps the last bytes written to it, for error reports.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTail(max int) *tail { return &tail{max: max, buf: make([]byte, 0, max)} }

// Write keeps the last t.max bytes of everything written; it never fails.
func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = t.buf[:copy(t.buf, t.buf[over:])]
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// Lines returns at most the last n lines kept, without a trailing newline.
func (t *tail) Lines(n int) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := bytes.TrimRight(t.buf, "\n")
	start, end := 0, len(s)
	for range n {
		j := bytes.LastIndexByte(s[:end], '\n')
		if j < 0 {
			start = 0
			break
		}
		start, end = j+1, j
	}
	return bytes.Clone(s[start:])
}
