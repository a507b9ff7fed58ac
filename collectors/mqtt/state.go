package mqtt

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"

	"github.com/gemba-io/gemba/internal/fsutil"
)

// subState is what the broker holds for a persistent session, as far as we know: the client id
// and the topic filters subscribed with it. Kept so a filter removed from the config is
// unsubscribed after a restart instead of flowing forever.
type subState struct {
	ClientID string          `json:"client_id"`
	Topics   map[string]byte `json:"topics"`
}

const stateFile = "subscriptions.json"

// fileSafe turns a client id into a directory name: readable where it can be, and unique (a hash
// of the id is appended when characters had to be replaced).
func fileSafe(id string) string {
	b := []byte(id)
	changed := false
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i], changed = '_', true
		}
	}
	if !changed && id != "" && id != "." && id != ".." {
		return id
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return fmt.Sprintf("%s-%08x", b, h.Sum32())
}

func loadState(dir string) (subState, error) {
	var s subState
	if dir == "" {
		return s, nil
	}
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if os.IsNotExist(err) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read subscription state: %w", err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return subState{}, fmt.Errorf("subscription state %s: %w", filepath.Join(dir, stateFile), err)
	}
	return s, nil
}

// saveState writes the state atomically.
func saveState(dir string, s subState) error {
	if dir == "" {
		return nil
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, stateFile), data)
}

// writeFileAtomic replaces path with data durably (see fsutil.WriteFileAtomic), creating its
// directory first: the state lives under a per-client directory that may not exist yet.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := fsutil.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}
