package mqtt

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
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

// writeFileAtomic replaces path with data durably: a crash leaves the old or the new file,
// never half of one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("state %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("state %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
