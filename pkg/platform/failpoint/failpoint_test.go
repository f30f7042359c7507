package failpoint_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"

	"github.com/lockdown/lockdown/pkg/platform/failpoint"
)

func TestParse(t *testing.T) {
	t.Run("names and counts are read, an empty list arms nothing", func(t *testing.T) {
		s, err := failpoint.Parse(" a , b:3 ,")
		if err != nil {
			t.Fatal(err)
		}
		got := s.Armed()
		slices.Sort(got)
		if !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("armed %v", got)
		}
		empty, err := failpoint.Parse("")
		if err != nil || len(empty.Armed()) != 0 {
			t.Fatalf("empty: %v %v", empty.Armed(), err)
		}
	})
	t.Run("a count that is not a positive number is refused", func(t *testing.T) {
		for _, bad := range []string{"a:0", "a:x", "a:-1"} {
			if _, err := failpoint.Parse(bad); err == nil {
				t.Errorf("%q accepted", bad)
			}
		}
	})
	t.Run("an unarmed point and a nil set do nothing", func(t *testing.T) {
		out, err := child(t, "elsewhere", "unarmed")
		if err != nil || out != "hit here\nnil set hit\n" {
			t.Fatalf("the child ended with %v after %q, want a normal exit after both hits", err, out)
		}
	})
	t.Run("an armed point fires only on its Nth hit, with SIGKILL", func(t *testing.T) {
		out, err := child(t, "p:3", "thrice")
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("the child ended with %v, want killed by SIGKILL", err)
		}
		if out != "hit 1\nhit 2\n" {
			t.Fatalf("the child printed %q, want the two hits before the third killed it", out)
		}
	})
}

// child runs this test binary again as TestChild with the failpoints
// armed, and returns what it printed: firing kills the process, which the
// test binary itself must survive.
func child(t *testing.T, armed, scenario string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), failpoint.EnvVar+"="+armed, "FAILPOINT_TEST_CHILD="+scenario)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	err := cmd.Run()
	return stdout.String(), err
}

// TestChild is the child process of child; it does nothing unless
// FAILPOINT_TEST_CHILD names a scenario.
func TestChild(t *testing.T) {
	scenario := os.Getenv("FAILPOINT_TEST_CHILD")
	if scenario == "" {
		t.Skip("run by child")
	}
	s, err := failpoint.FromEnv()
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	switch scenario {
	case "unarmed":
		s.Hit("here")
		fmt.Println("hit here")
		var none *failpoint.Set
		none.Hit("here")
		fmt.Println("nil set hit")
	case "thrice":
		for i := 1; i <= 3; i++ {
			s.Hit("p")
			fmt.Printf("hit %d\n", i)
		}
	}
	os.Exit(0)
}
