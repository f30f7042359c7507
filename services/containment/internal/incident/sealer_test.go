package incident_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/lockdown/lockdown/services/containment/internal/incident"
)

// recordingFence records the nodes it fenced; err makes every fence fail.
type recordingFence struct {
	mu     sync.Mutex
	fenced []string
	err    error
}

func (f *recordingFence) Fence(_ context.Context, node string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fenced = append(f.fenced, node)
	return f.err
}

func TestSealerUnreachableNode(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	vault := func() *fakeVault {
		return &fakeVault{nodes: []string{"a", "b"}, sealable: map[string]bool{"a": true}, status: map[string]incident.NodeStatus{
			"a": {Address: "a", Reachable: true, Active: true},
			"b": {Address: "b", Error: "dial tcp: connection refused"}, // answers nothing
		}}
	}
	t.Run("a node that answers nothing for the whole pass is fenced and the round goes on", func(t *testing.T) {
		fence := &recordingFence{}
		seals, problems := incident.NewSealer(vault(), fence, logger, time.Millisecond, time.Hour).SealAll(context.Background(), 50*time.Millisecond)
		if len(problems) != 0 || !incident.AllConfirmed(seals) {
			t.Fatalf("problems %v, seals %+v", problems, seals)
		}
		if seals[1].Method != incident.MethodFencedUnreachable || len(fence.fenced) != 1 || fence.fenced[0] != "b" {
			t.Fatalf("node b: %+v, fenced %v", seals[1], fence.fenced)
		}
	})
	t.Run("without a working fence the node stays a problem and the round open", func(t *testing.T) {
		fence := &recordingFence{err: errors.New("no fence command configured")}
		seals, problems := incident.NewSealer(vault(), fence, logger, time.Millisecond, time.Hour).SealAll(context.Background(), 50*time.Millisecond)
		if incident.AllConfirmed(seals) || problems["b"] == "" || seals[0].ConfirmedAt.IsZero() {
			t.Fatalf("problems %v, seals %+v", problems, seals)
		}
	})
}
