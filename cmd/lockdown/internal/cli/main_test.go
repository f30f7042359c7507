package cli

import (
	"os"
	"testing"

	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestMain builds the services the tests start as processes from this
// source, not from a .bin that may be stale.
func TestMain(m *testing.M) { os.Exit(localstack.RunWithServices(m)) }
