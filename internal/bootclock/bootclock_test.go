package bootclock

import "testing"

// The boot's id stays the same and its clock does not go back while the process runs.
func TestRead(t *testing.T) {
	id, since, ok := Read()
	if !ok || id == "" || since <= 0 {
		t.Fatalf("Read() = %q, %v, %v; want a boot_id and the time since it", id, since, ok)
	}
	if id2, since2, _ := Read(); id2 != id || since2 < since {
		t.Fatalf("Read() went from %q %v to %q %v", id, since, id2, since2)
	}
}
