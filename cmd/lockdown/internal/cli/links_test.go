package cli_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinariesLinkNoTestkit: the operator's lockdown and the four services
// link nothing of the testkit module (the local stack's servers, the
// tenant seed, the tests' helpers). lockdown-drill does — that is why it
// is a binary of its own — which also shows the check can fail.
func TestBinariesLinkNoTestkit(t *testing.T) {
	links := func(t *testing.T, pkg string) []string {
		t.Helper()
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		var kit []string
		for _, p := range strings.Fields(string(out)) {
			if strings.HasPrefix(p, "github.com/lockdown/lockdown/testkit") {
				kit = append(kit, p)
			}
		}
		return kit
	}
	for _, bin := range []string{"cmd/lockdown", "services/containment", "services/assessor", "services/rotator", "services/notifier"} {
		t.Run(bin+" links no testkit package", func(t *testing.T) {
			if kit := links(t, "github.com/lockdown/lockdown/"+bin); len(kit) > 0 {
				t.Fatalf("%s links %v", bin, kit)
			}
		})
	}
	t.Run("lockdown-drill links the local stack", func(t *testing.T) {
		if kit := links(t, "github.com/lockdown/lockdown/cmd/lockdown/lockdown-drill"); !strings.Contains(strings.Join(kit, " "), "testkit/localstack") {
			t.Fatalf("lockdown-drill links %v, not the local stack", kit)
		}
	})
}
