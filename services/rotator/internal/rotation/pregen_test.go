package rotation

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/lockdown/lockdown/services/rotator/internal/keys"
)

func TestPregen(t *testing.T) {
	ctx := context.Background()
	p := NewPregen()
	var made atomic.Int32
	p.newSet = func(tenant, selector, dkimType string, dkimBits int) (keys.Set, error) {
		made.Add(1)
		return keys.Set{}, nil
	}
	// tenant-b's job started before the generation reached it: it made
	// its own material.
	if _, ok := p.Take("inc", "tenant-b"); ok {
		t.Fatal("material before any was generated")
	}
	stored, err := p.Generate(ctx, "inc", []string{"tenant-a", "tenant-b", "tenant-c"}, "rsa", 2048, "sel")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a tenant whose job already started is not generated for", func(t *testing.T) {
		if stored != 2 || made.Load() != 2 {
			t.Fatalf("stored %d, made %d; want 2 and 2", stored, made.Load())
		}
	})
	t.Run("a job takes its tenant's material once", func(t *testing.T) {
		if _, ok := p.Take("inc", "tenant-a"); !ok {
			t.Fatal("tenant-a has no material")
		}
		if _, ok := p.Take("inc", "tenant-a"); ok {
			t.Fatal("tenant-a's material taken twice")
		}
	})
	t.Run("material is kept per incident", func(t *testing.T) {
		if _, ok := p.Take("other", "tenant-c"); ok {
			t.Fatal("another incident's job took tenant-c's material")
		}
		if _, ok := p.Take("inc", "tenant-c"); !ok {
			t.Fatal("tenant-c has no material")
		}
	})
}
