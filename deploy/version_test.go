package deploy

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// `make build` stamps both binaries with the release in VERSION (as v0.x.y) and the commit; the
// package script does the same for the agent (checked by the install test through `version`).
func TestMakeBuildStampsVersionFromVERSION(t *testing.T) {
	need(t, "make", haveTool("make"))
	v, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	ver := strings.TrimSpace(string(v))
	if parts := strings.Split(ver, "."); len(parts) != 3 || strings.HasPrefix(ver, "v") {
		t.Fatalf("VERSION %q: want MAJOR.MINOR.PATCH without a v", ver)
	}
	cmd := exec.Command("make", "-n", "build", "COMMIT=abc1234")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	for _, want := range []string{
		"-X github.com/gemba-io/gemba/agent.Version=v" + ver + " ",
		"-X github.com/gemba-io/gemba/agent.Commit=abc1234",
		"-X github.com/gemba-io/gemba/hub.Version=v" + ver + " ",
		"-X github.com/gemba-io/gemba/hub.Commit=abc1234",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make build does not stamp %q:\n%s", want, out)
		}
	}
}
