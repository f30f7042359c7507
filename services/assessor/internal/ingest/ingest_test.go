package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lockdown/lockdown/services/assessor/internal/audit"
	"github.com/lockdown/lockdown/services/assessor/internal/ingest"
	"github.com/lockdown/lockdown/testkit/testwait"
)

// memSink records batches; fail makes it refuse writes (PostgreSQL down).
type memSink struct {
	mu      sync.Mutex
	seen    map[string]bool
	fail    bool
	entries []audit.Entry
}

func (m *memSink) Insert(_ context.Context, batch []audit.Entry, _ func(audit.Entry) bool) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return 0, errors.New("database down")
	}
	var n int64
	for _, e := range batch {
		k := e.RequestID + "/" + e.Type
		if !m.seen[k] {
			m.seen[k] = true
			m.entries = append(m.entries, e)
			n++
		}
	}
	return n, nil
}

func (m *memSink) ids() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, e := range m.entries {
		out = append(out, e.RequestID)
	}
	return out
}

// devices lists the distinct devices the stored entries came through.
func (m *memSink) devices() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, e := range m.entries {
		if !seen[e.Device] {
			seen[e.Device] = true
			out = append(out, e.Device)
		}
	}
	return out
}

func entry(id string) string {
	return fmt.Sprintf(`{"time":"2026-11-25T10:00:00.000Z","type":"response","auth":{"accessor":"hmac-sha256:ab","display_name":"token"},"request":{"id":%q,"operation":"read","path":"secret/data/tenants/acme/ssh"}}`, id)
}

func pipeline(sink ingest.Sink, buffer int) *ingest.Pipeline {
	tenants, _ := audit.ParseTemplates([]string{"secret/data/tenants/{tenant}/"})
	return ingest.NewPipeline(sink, ingest.Options{Buffer: buffer, BatchSize: 100, FlushEvery: 10 * time.Millisecond, MaxLine: 4096,
		Tenants: tenants, PatternHit: func(audit.Entry) bool { return false }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func TestIngest(t *testing.T) {
	t.Run("malformed and truncated lines are counted and skipped; the good ones around them are kept", func(t *testing.T) {
		sink := &memSink{seen: map[string]bool{}}
		p := pipeline(sink, 100)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.Run(ctx)
		ln, err := ingest.Listen("127.0.0.1:0", "socket", p)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = ln.Serve(ctx) }()
		conn, err := net.Dial("tcp", ln.Addr())
		if err != nil {
			t.Fatal(err)
		}
		lines := entry("r1") + "\n" + "not json at all\n" + entry("r2")[:40] + "\n" + `{"type":"response","request":{}}` + "\n" +
			string(make([]byte, 5000)) + "\n" + entry("r3") + "\n" + entry("r1") + "\n" + entry("r4") // last one without a newline
		_, err = conn.Write([]byte(lines))
		must(t, err)
		must(t, conn.Close())
		// r1 is sent twice and stored once; r4 has no final newline.
		testwait.For(t, 10*time.Second, "the good entries", func() bool { return fmt.Sprint(sink.ids()) == "[r1 r3 r4]" })
		testwait.For(t, 10*time.Second, "the counters", func() bool { return p.Stats.Malformed.Load() == 4 && p.Stats.Repeated.Load() == 1 })
		if p.Stats.Received.Load() != 8 || p.Stats.Stored.Load() != 3 {
			t.Fatalf("received %d stored %d", p.Stats.Received.Load(), p.Stats.Stored.Load())
		}
		if d := sink.devices(); fmt.Sprint(d) != "[socket]" {
			t.Fatalf("entries from the listener are marked as from devices %v, want [socket]", d)
		}
	})

	t.Run("with the database down the buffer fills, then lines are dropped and counted, never blocking the listener", func(t *testing.T) {
		sink := &memSink{seen: map[string]bool{}, fail: true}
		p := pipeline(sink, 10)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.Run(ctx)
		for i := range 200 {
			p.Offer("socket", []byte(entry(fmt.Sprintf("d%d", i)))) // returns at once even though nothing is written
		}
		if p.Stats.Dropped.Load() == 0 {
			t.Fatal("nothing dropped with a full buffer")
		}
		held := 200 - p.Stats.Dropped.Load()
		sink.mu.Lock()
		sink.fail = false
		sink.mu.Unlock()
		testwait.For(t, 10*time.Second, "the held lines to be written once the database is back", func() bool { return int64(len(sink.ids())) == held })
	})

	t.Run("the file follower reads appends, and starts over after truncation and rotation", func(t *testing.T) {
		sink := &memSink{seen: map[string]bool{}}
		p := pipeline(sink, 100)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.Run(ctx)
		path := filepath.Join(t.TempDir(), "audit.log")
		must(t, os.WriteFile(path, []byte(entry("f1")+"\n"+entry("f2")[:30]), 0o644)) // f2 not finished yet
		go func() { _ = p.Follow(ctx, path, "file", 10*time.Millisecond) }()
		testwait.For(t, 10*time.Second, "f1", func() bool { return len(sink.ids()) == 1 })
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		must(t, err)
		_, err = f.WriteString(entry("f2")[30:] + "\n")
		must(t, err)
		must(t, f.Close())
		testwait.For(t, 10*time.Second, "f2 once its line is complete", func() bool { return len(sink.ids()) == 2 })
		must(t, os.WriteFile(path, []byte(entry("f3")+"\n"), 0o644)) // truncated and rewritten
		testwait.For(t, 10*time.Second, "f3 after truncation", func() bool { return len(sink.ids()) == 3 })
		must(t, os.Rename(path, path+".1")) // rotated
		must(t, os.WriteFile(path, []byte(entry("f4")+"\n"+entry("f1")+"\n"), 0o644))
		testwait.For(t, 10*time.Second, "f4 after rotation", func() bool { return len(sink.ids()) == 4 })
		if p.Stats.Malformed.Load() != 0 {
			t.Fatalf("malformed %d", p.Stats.Malformed.Load())
		}
		if d := sink.devices(); fmt.Sprint(d) != "[file]" {
			t.Fatalf("entries from the follower are marked as from devices %v, want [file]", d)
		}
	})
	t.Run("an assessment's catch-up reads the file to its end without waiting for the next poll", func(t *testing.T) {
		sink := &memSink{seen: map[string]bool{}}
		p := pipeline(sink, 100)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.Run(ctx)
		path := filepath.Join(t.TempDir(), "audit.log")
		must(t, os.WriteFile(path, []byte(entry("c1")+"\n"), 0o644))
		go func() { _ = p.Follow(ctx, path, "file", time.Hour) }() // the first pass runs at once, the next in an hour
		testwait.For(t, 10*time.Second, "c1", func() bool { return len(sink.ids()) == 1 })
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		must(t, err)
		_, err = f.WriteString(entry("c2") + "\n")
		must(t, err)
		must(t, f.Close())
		if !p.CatchUp(ctx, 5*time.Second) || !p.Settle(ctx, 5*time.Second) {
			t.Fatal("no catch-up")
		}
		if got := sink.ids(); len(got) != 2 {
			t.Fatalf("after the catch-up the sink holds %v", got)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
