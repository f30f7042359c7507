package rotation

import (
	"context"
	"runtime"
	"sync"

	"github.com/lockdown/lockdown/services/rotator/internal/keys"
)

// Pregen holds key material generated while an incident waits at the
// unseal gate, so that after access.revoked only the Vault writes remain.
// The material stays in this process's memory: a process that dies loses
// it and its jobs generate again.
type Pregen struct {
	mu    sync.Mutex
	sets  map[string]keys.Set
	taken map[string]bool
	// newSet makes one tenant's material (keys.NewSet; a test counts).
	newSet func(tenant, selector, dkimType string, dkimBits int) (keys.Set, error)
}

// NewPregen returns an empty cache.
func NewPregen() *Pregen {
	return &Pregen{sets: map[string]keys.Set{}, taken: map[string]bool{}, newSet: keys.NewSet}
}

func pregenKey(incidentID, tenant string) string { return incidentID + "/" + tenant }

// Take hands a tenant's material to its job, once; later generation for
// that tenant is discarded.
func (p *Pregen) Take(incidentID, tenant string) (keys.Set, bool) {
	if p == nil {
		return keys.Set{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	k := pregenKey(incidentID, tenant)
	s, ok := p.sets[k]
	delete(p.sets, k)
	p.taken[k] = true
	return s, ok
}

// started says whether a tenant's job has already asked for its
// material: the job made its own, and making it here would be lost work
// (after the unseal the jobs overtake the generation).
func (p *Pregen) started(incidentID, tenant string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.taken[pregenKey(incidentID, tenant)]
}

func (p *Pregen) put(incidentID, tenant string, s keys.Set) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := pregenKey(incidentID, tenant)
	if p.taken[k] {
		return false
	}
	p.sets[k] = s
	return true
}

// Generate makes material for every tenant on all cores until done or ctx
// ends, skipping tenants whose job already started (it made its own). It returns how many
// sets it stored.
func (p *Pregen) Generate(ctx context.Context, incidentID string, tenants []string, dkimType string, dkimBits int, selector string) (int, error) {
	work := make(chan string)
	var mu sync.Mutex
	stored := 0
	var firstErr error
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				if p.started(incidentID, t) {
					continue
				}
				s, err := p.newSet(t, selector, dkimType, dkimBits)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil && p.put(incidentID, t, s) {
					stored++
				}
				mu.Unlock()
			}
		}()
	}
	for _, t := range tenants {
		select {
		case work <- t:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	return stored, firstErr
}
