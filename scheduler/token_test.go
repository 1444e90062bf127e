package scheduler

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreateToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	tok, err := LoadOrCreateToken(dir)
	if err != nil || len(tok) != 48 {
		t.Fatalf("token %q, %v", tok, err)
	}
	st, err := os.Stat(filepath.Join(dir, TokenFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", st, err)
	}
	again, err := LoadOrCreateToken(dir)
	if err != nil || again != tok {
		t.Errorf("second start: %q %v, want the same token", again, err)
	}
}
