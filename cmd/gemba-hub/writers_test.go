package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateWritersAndSharedToken: validate --print shows the writers' names and no token, and
// warns (still valid) that the shared write_token beside forbid_self_approval lets its holder
// approve their own rule set's promotions under another name, saying to use http.writers.
func TestValidateWritersAndSharedToken(t *testing.T) {
	dir := t.TempDir()
	tokFile := writeFile(t, filepath.Join(dir, "bob.token"), "tok-bob-file\n")
	file := writeFile(t, filepath.Join(dir, "hub.yaml"), `hub: {id: hub-1, data_dir: `+dir+`}
http:
  read_token: tok-read-inline
  write_token: ${GEMBA_TEST_SHARED}
  writers:
    - {name: alice, token: tok-alice-inline}
    - {name: bob, token: {file: `+tokFile+`}}
guard: {max_discount: 20}
`)
	stdout, stderr, code := runHub(t, "", []string{"GEMBA_TEST_SHARED=tok-shared-env"}, "validate", "--print", "-c", file)
	if code != 0 || !strings.Contains(stdout, "valid") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	for _, tok := range []string{"tok-read-inline", "tok-shared-env", "tok-alice-inline", "tok-bob-file"} {
		if strings.Contains(stdout+stderr, tok) {
			t.Errorf("validate --print shows the token %s:\n%s%s", tok, stdout, stderr)
		}
	}
	if !strings.Contains(stdout, `"alice"`) || !strings.Contains(stdout, tokFile) {
		t.Errorf("the effective config does not name the writers:\n%s", stdout)
	}
	if !strings.Contains(stderr, file+": warning: http.write_token") || !strings.Contains(stderr, "http.writers") {
		t.Errorf("no warning about the shared write token beside forbid_self_approval:\n%s", stderr)
	}
}
