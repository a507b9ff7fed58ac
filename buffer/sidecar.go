package buffer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gemba-io/gemba/internal/fsutil"
	"github.com/gemba-io/gemba/signal"
)

// The sidecar is what the store knows it holds, kept outside Badger's files (its MANIFEST, tables
// and logs), so that a store that opens empty or short because those were damaged or deleted is
// noticed and the loss counted, instead of starting quietly with a smaller backlog. It is replaced
// atomically at open, at close and, while anything changes, at most once per sidecarEvery.
const sidecarName = "GEMBA-BUFFER-STATE.json"

type sidecar struct {
	Version     int                      `json:"version"`
	Incarnation string                   `json:"incarnation"`
	Streams     map[string]sidecarStream `json:"streams"`
}

type sidecarStream struct {
	Head    uint64            `json:"head"`    // highest sequence removed (acked or dropped)
	Acked   uint64            `json:"acked"`   // highest sequence acked
	Last    uint64            `json:"last"`    // last sequence appended
	Count   uint64            `json:"count"`   // records waiting
	Removed uint64            `json:"removed"` // records ever removed (acks and drops)
	Dropped map[string]uint64 `json:"dropped,omitempty"`
}

func readSidecar(dir string) (*sidecar, error) {
	path := filepath.Join(dir, sidecarName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var sc sidecar
	if err := json.Unmarshal(data, &sc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if sc.Version != 1 || !validIncarnation(sc.Incarnation) {
		return nil, fmt.Errorf("%s: version %d, incarnation %q: not a state file this agent wrote", path, sc.Version, sc.Incarnation)
	}
	return &sc, nil
}

// sidecarLocked describes the store now. s.mu must be held.
func (s *Store) sidecarLocked() sidecar {
	sc := sidecar{Version: 1, Incarnation: s.incarnation, Streams: map[string]sidecarStream{}}
	for i := range s.st {
		st := &s.st[i]
		d := map[string]uint64{}
		for k, v := range s.drops[i] {
			if v > 0 {
				d[k] = v
			}
		}
		sc.Streams[signal.Stream(i).String()] = sidecarStream{Head: st.head, Acked: st.acked, Last: st.last, Count: st.count, Removed: st.removed, Dropped: d}
	}
	return sc
}

// saveSidecar writes the sidecar when it changed since the last write.
func (s *Store) saveSidecar(force bool) {
	s.sideMu.Lock()
	defer s.sideMu.Unlock()
	s.mu.Lock()
	sc := s.sidecarLocked()
	s.mu.Unlock()
	data, err := json.Marshal(sc)
	if err != nil {
		return
	}
	if !force && string(data) == string(s.sideLast) {
		return
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(s.cfg.Dir, sidecarName), data, 0o640); err != nil {
		// The next pass tries again; a full disk is reported by makeRoom already.
		s.log.Warn("buffer state file not written", "err", err)
		return
	}
	s.sideLast = data
}
