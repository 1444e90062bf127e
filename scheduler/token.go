package scheduler

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Where a scheduler keeps the tokens it generates.
const (
	TokenFile     = "token"      // the API token: operators, CLI, console
	JoinTokenFile = "join-token" // what agents join with
)

// LoadOrCreateToken returns the API token kept in dir/token, making one
// (24 random bytes, hex, mode 0600) on first start.
func LoadOrCreateToken(dir string) (string, error) { return loadOrCreate(dir, TokenFile) }

// LoadOrCreateJoinToken is LoadOrCreateToken for the agents' join token.
func LoadOrCreateJoinToken(dir string) (string, error) { return loadOrCreate(dir, JoinTokenFile) }

func loadOrCreate(dir, file string) (string, error) {
	p := filepath.Join(dir, file)
	if b, err := os.ReadFile(p); err == nil {
		if tok := strings.TrimSpace(string(b)); tok != "" {
			return tok, nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b)
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write token: %w", err)
	}
	return tok, nil
}
