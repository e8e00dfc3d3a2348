// Package deploy holds the systemd units of the examples' servers; its test
// checks them with systemd-analyze verify.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitsVerify runs systemd-analyze verify on each unit file. verify
// checks that ExecStart's program exists and is executable, so the test
// verifies a copy whose program path points at an executable of the test's
// own; nothing else of the unit is changed. systemd-analyze warns about
// unknown or misplaced keys without failing, so any output fails the test.
// Where systemd is absent the test skips, except under CI=true.
func TestUnitsVerify(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("systemd-analyze not found (apt-get install systemd): %v", err)
		}
		t.Skip("systemd-analyze not found: systemd is absent")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "server")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, unit := range []string{"corework-wsserver.service", "corework-apiserver.service"} {
		text, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		program := "/usr/local/bin/" + strings.TrimSuffix(unit, ".service")
		if !strings.Contains(string(text), "ExecStart="+program+" ") {
			t.Fatalf("%s: ExecStart does not run %s", unit, program)
		}
		copyPath := filepath.Join(dir, unit)
		if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(text), program, fake)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "verify", copyPath).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
		// What the README promises of every unit.
		for _, want := range []string{"DynamicUser=true", "Restart=on-failure", "LimitNOFILE=65536",
			"Environment=GOMEMLIMIT=", "TimeoutStopSec=", "KillSignal=SIGTERM", "WantedBy=multi-user.target"} {
			if !strings.Contains(string(text), want) {
				t.Errorf("%s lacks %s", unit, want)
			}
		}
	}
}

// TestVerifyCatchesMistakes: a misspelt key, which systemd ignores with a
// warning and an exit status of 0, fails the check above.
func TestVerifyCatchesMistakes(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found")
	}
	dir := t.TempDir()
	unit := filepath.Join(dir, "broken.service")
	os.WriteFile(unit, []byte("[Service]\nExecStart=/bin/true\nRestrat=always\n"), 0o644)
	out, _ := exec.Command(bin, "verify", unit).CombinedOutput()
	if !strings.Contains(string(out), "Unknown key") {
		t.Fatalf("a misspelt key passed verify silently: %q", out)
	}
}
