package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// run runs a command with a deadline and returns its combined output, failing the test with it.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dpkg runs dpkg, waiting out another dpkg or apt holding the lock (make peers may be installing).
func dpkg(t *testing.T, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err == nil {
			return string(out)
		}
		if !bytes.Contains(out, []byte("lock")) || time.Now().After(deadline) {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		time.Sleep(time.Second) // another package manager holds the lock: retry, not synchronisation
	}
}

func installed(pkg string) bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", pkg).Output()
	return err == nil && strings.Contains(string(out), "install ok installed")
}

type owner struct {
	user, group string
	mode        os.FileMode
}

func stat(t *testing.T, path string) owner {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	o := owner{mode: fi.Mode().Perm(), user: strconv.Itoa(int(st.Uid)), group: strconv.Itoa(int(st.Gid))}
	if u, err := user.LookupId(o.user); err == nil {
		o.user = u.Username
	}
	if g, err := user.LookupGroupId(o.group); err == nil {
		o.group = g.Name
	}
	return o
}

// The .deb installs what operations.md promises — binary, unit, config, state dir, docs, the gemba
// system user — and dpkg --purge takes it all away again.
func TestDebInstallsAndPurgesCleanly(t *testing.T) {
	need(t, "root", os.Geteuid() == 0)
	need(t, "dpkg", haveTool("dpkg") && haveTool("dpkg-query"))
	if installed("gemba-agent") {
		t.Fatal("gemba-agent is already installed on this machine; the test will not replace it (dpkg --purge gemba-agent first)")
	}
	_, userErr := user.Lookup("gemba")
	userExisted := userErr == nil

	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	version, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	ver := strings.TrimSpace(string(version))
	// One architecture: the install is what this test checks (make package does both). The .rpm is
	// built too when the rpm tool is here to read it.
	formats := "deb"
	if haveTool("rpm") {
		formats = "deb rpm"
	}
	run(t, root, []string{"ARCHS=amd64", "FORMATS=" + formats, "OUT=" + out, "COMMIT=testbuild"}, "bash", "scripts/package.sh")
	deb := filepath.Join(out, "gemba-agent_"+ver+"_amd64.deb")
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("package not built: %v", err)
	}
	if formats != "deb" {
		checkRPM(t, filepath.Join(out, "gemba-agent-"+ver+"-1.x86_64.rpm"), deb)
	}

	t.Cleanup(func() {
		if installed("gemba-agent") {
			_, _ = exec.Command("dpkg", "--purge", "gemba-agent").CombinedOutput()
		}
		if !userExisted {
			// The package keeps its system user on purge (Debian practice); the test leaves the
			// machine as it found it.
			_, _ = exec.Command("userdel", "gemba").CombinedOutput()
			_, _ = exec.Command("groupdel", "gemba").CombinedOutput()
		}
	})
	dpkg(t, "-i", deb)
	if !installed("gemba-agent") {
		t.Fatal("dpkg -i succeeded but gemba-agent is not installed")
	}

	// The user: a system account that cannot log in, at home in its state dir.
	u, err := user.Lookup("gemba")
	if err != nil {
		t.Fatalf("postinstall did not create the gemba user: %v", err)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid >= 1000 || uid == 0 {
		t.Errorf("gemba uid %d is not a system uid", uid)
	}
	if u.HomeDir != "/var/lib/gemba" {
		t.Errorf("gemba home %q", u.HomeDir)
	}
	if pw := run(t, "", nil, "getent", "passwd", "gemba"); !strings.HasSuffix(strings.TrimSpace(pw), ":/usr/sbin/nologin") {
		t.Errorf("gemba can log in: %s", pw)
	}

	// Files, owners and modes.
	want := map[string]owner{
		"/usr/bin/gemba-agent":                        {"root", "root", 0o755},
		"/usr/lib/systemd/system/gemba-agent.service": {"root", "root", 0o644},
		"/etc/gemba":                            {"root", "root", 0o755},
		"/etc/gemba/agent.yaml":                 {"root", "gemba", 0o640},
		"/etc/gemba/conf.d":                     {"root", "gemba", 0o750},
		"/var/lib/gemba":                        {"gemba", "gemba", 0o750},
		"/usr/share/doc/gemba/LICENSE":          {"root", "root", 0o644},
		"/usr/share/doc/gemba/operations.md":    {"root", "root", 0o644},
		"/usr/share/doc/gemba/configuration.md": {"root", "root", 0o644},
		"/usr/share/doc/gemba/CHANGELOG.md":     {"root", "root", 0o644},
	}
	for path, w := range want {
		if got := stat(t, path); got != w {
			t.Errorf("%s: %s:%s %o, want %s:%s %o", path, got.user, got.group, got.mode, w.user, w.group, w.mode)
		}
	}
	unit, err := os.ReadFile("/usr/lib/systemd/system/gemba-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("gemba-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(unit, src) {
		t.Error("installed unit differs from deploy/gemba-agent.service")
	}
	lic, err := os.ReadFile("/usr/share/doc/gemba/LICENSE")
	if err != nil || !bytes.Contains(lic, []byte("Apache License")) || !bytes.Contains(lic, []byte("Version 2.0")) {
		t.Errorf("LICENSE in docs is not Apache-2.0 (%v)", err)
	}
	// The packaged binary runs and says which release and commit it is.
	if v := run(t, "", nil, "/usr/bin/gemba-agent", "version"); !strings.HasPrefix(v, "gemba-agent v"+ver+" (commit testbuild,") {
		t.Errorf("gemba-agent version: %q, want gemba-agent v%s (commit testbuild, …", v, ver)
	}
	// The unit's ExecStartPre as the unit runs it: the gemba user reads agent.yaml and the empty
	// conf.d the package made (a missing or unreadable dir would keep the agent from starting).
	if v := run(t, "", nil, "setpriv", "--reuid=gemba", "--regid=gemba", "--init-groups", "/usr/bin/gemba-agent",
		"validate", "-c", "/etc/gemba/agent.yaml", "--config-dir", "/etc/gemba/conf.d"); !strings.Contains(v, "valid (config version") {
		t.Errorf("validate as the unit runs it: %s", v)
	}
	// systemd accepts the installed unit (user, paths, directives of this systemd).
	if haveTool("systemd-analyze") {
		if out, err := exec.Command("systemd-analyze", "verify", "/usr/lib/systemd/system/gemba-agent.service").CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}

	// Remove (config and state stay, as dpkg -r promises), then purge (everything goes).
	dpkg(t, "-r", "gemba-agent")
	for _, gone := range []string{"/usr/bin/gemba-agent", "/usr/lib/systemd/system/gemba-agent.service", "/usr/share/doc/gemba"} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s still there after dpkg -r (%v)", gone, err)
		}
	}
	if _, err := os.Stat("/etc/gemba/agent.yaml"); err != nil {
		t.Errorf("dpkg -r removed the config: %v", err)
	}
	dpkg(t, "--purge", "gemba-agent")
	for _, gone := range []string{"/etc/gemba", "/var/lib/gemba"} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s still there after dpkg --purge (%v)", gone, err)
		}
	}
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "gemba-agent").CombinedOutput(); strings.Contains(string(out), "installed") && !strings.Contains(string(out), "not-installed") {
		t.Errorf("dpkg still lists gemba-agent: %s", out)
	}
}

// checkRPM compares the .rpm's files with the .deb's and checks it carries the same scripts and
// marks the config as a config file.
func checkRPM(t *testing.T, rpm, deb string) {
	t.Helper()
	rpmFiles := strings.Fields(run(t, "", nil, "rpm", "-qpl", rpm))
	var debFiles []string
	for _, l := range strings.Split(run(t, "", nil, "dpkg-deb", "-c", deb), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 {
			continue
		}
		p := strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")
		// dpkg lists every parent directory; rpm only those the package owns.
		if p != "" && (!strings.HasPrefix(l, "d") || p == "/etc/gemba" || p == "/etc/gemba/conf.d" || p == "/var/lib/gemba") {
			debFiles = append(debFiles, p)
		}
	}
	if strings.Join(rpmFiles, " ") != strings.Join(sortedCopy(debFiles), " ") {
		t.Errorf("rpm files differ from deb files:\nrpm %v\ndeb %v", rpmFiles, sortedCopy(debFiles))
	}
	scripts := run(t, "", nil, "rpm", "-qp", "--scripts", rpm)
	for _, want := range []string{"postinstall scriptlet", "useradd --system", "preuninstall scriptlet", "postuninstall scriptlet"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm scripts lack %q:\n%s", want, scripts)
		}
	}
	if c := strings.TrimSpace(run(t, "", nil, "rpm", "-qpc", rpm)); c != "/etc/gemba/agent.yaml" {
		t.Errorf("rpm config files %q, want /etc/gemba/agent.yaml", c)
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
