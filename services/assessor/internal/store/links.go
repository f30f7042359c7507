package store

import (
	"context"
	"slices"

	"github.com/jackc/pgx/v5"
)

// DeviceAccessor is a token accessor as one audit device wrote it: the
// HMAC means something only together with the device's salt.
type DeviceAccessor struct {
	Device   string `json:"device"`
	Accessor string `json:"accessor"`
}

// Link is two accessors found to name one token: the same request logged
// by two audit devices.
type Link struct{ A, B DeviceAccessor }

// link records the links: every accessor of one token ends with the same
// identity, the least of them (union-find over the stored groups and the
// new pairs).
func link(ctx context.Context, tx pgx.Tx, pairs []Link) error {
	if len(pairs) == 0 {
		return nil
	}
	known, err := identitiesIn(ctx, tx, pairs)
	if err != nil {
		return err
	}
	if allLinked(known, pairs) {
		return nil
	}
	// Changes to token_links are serialised: merging two groups reads and
	// rewrites several rows, and two writers merging overlapping groups at
	// once could otherwise split a token in two. Taken only when a batch
	// brings a link not yet recorded (once per token and device), and a
	// table lock only the assessor's role may take (an advisory lock any
	// role of the database could hold to stop the ingestion).
	if _, err := tx.Exec(ctx, `LOCK TABLE assessor.token_links IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return err
	}
	// Read again under the lock: another writer may have merged meanwhile.
	if known, err = identitiesIn(ctx, tx, pairs); err != nil {
		return err
	}
	parent := map[string]string{}
	var find func(string) string
	find = func(x string) string {
		p, ok := parent[x]
		if !ok || p == x {
			parent[x] = x
			return x
		}
		r := find(p)
		parent[x] = r
		return r
	}
	union := func(a, b string) {
		ra, rb := find(a), find(b)
		if ra == rb {
			return
		}
		// The least accessor names the group, whatever order links come in.
		if rb < ra {
			ra, rb = rb, ra
		}
		parent[rb] = ra
	}
	devices := map[string]string{}
	for _, p := range pairs {
		for _, da := range []DeviceAccessor{p.A, p.B} {
			devices[da.Accessor] = da.Device
			if id, ok := known[da.Accessor]; ok {
				union(da.Accessor, id)
			}
		}
		union(p.A.Accessor, p.B.Accessor)
	}
	// Old identities of each new group, to move every stored member along.
	moved := map[string][]string{}
	for acc, id := range known {
		root := find(acc)
		if id != root && !slices.Contains(moved[root], id) {
			moved[root] = append(moved[root], id)
		}
	}
	for root, olds := range moved {
		if _, err := tx.Exec(ctx, `UPDATE assessor.token_links SET identity = $1 WHERE identity = ANY($2)`, root, olds); err != nil {
			return err
		}
	}
	batch := &pgx.Batch{}
	for acc, dev := range devices {
		batch.Queue(`INSERT INTO assessor.token_links (accessor, device, identity) VALUES ($1, $2, $3)
			ON CONFLICT (accessor) DO UPDATE SET identity = EXCLUDED.identity`, acc, dev, find(acc))
	}
	// Group roots named only as another row's identity are members too.
	for root := range moved {
		if _, ok := devices[root]; !ok {
			batch.Queue(`UPDATE assessor.token_links SET identity = $1 WHERE accessor = $1`, root)
		}
	}
	return tx.SendBatch(ctx, batch).Close()
}

// identitiesIn returns the stored identity of every accessor of the pairs
// that has one.
func identitiesIn(ctx context.Context, tx pgx.Tx, pairs []Link) (map[string]string, error) {
	accessors := make([]string, 0, 2*len(pairs))
	for _, p := range pairs {
		accessors = append(accessors, p.A.Accessor, p.B.Accessor)
	}
	rows, err := tx.Query(ctx, `SELECT accessor, identity FROM assessor.token_links WHERE accessor = ANY($1)`, accessors)
	if err != nil {
		return nil, err
	}
	known := map[string]string{}
	var acc, id string
	_, err = pgx.ForEachRow(rows, []any{&acc, &id}, func() error { known[acc] = id; return nil })
	return known, err
}

func allLinked(known map[string]string, pairs []Link) bool {
	for _, p := range pairs {
		a, okA := known[p.A.Accessor]
		b, okB := known[p.B.Accessor]
		if !okA || !okB || a != b {
			return false
		}
	}
	return true
}

// Token is one token across audit devices: its identity and every
// accessor it was seen under.
type Token struct {
	Identity  string
	Accessors []DeviceAccessor
}

// Tokens returns, for each given accessor, the token it belongs to with
// all of that token's linked accessors. An accessor never linked is a
// token of its own, seen through one device only (its device is then not
// known here and left empty).
func (s *Store) Tokens(ctx context.Context, accessors []string) (map[string]Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT l.accessor, l.device, l.identity FROM assessor.token_links l
		WHERE l.identity IN (SELECT identity FROM assessor.token_links WHERE accessor = ANY($1))
		ORDER BY l.identity, l.device, l.accessor`, accessors)
	if err != nil {
		return nil, err
	}
	groups := map[string][]DeviceAccessor{}
	members := map[string]string{}
	var acc, dev, id string
	if _, err := pgx.ForEachRow(rows, []any{&acc, &dev, &id}, func() error {
		groups[id] = append(groups[id], DeviceAccessor{Device: dev, Accessor: acc})
		members[acc] = id
		return nil
	}); err != nil {
		return nil, err
	}
	out := make(map[string]Token, len(accessors))
	for _, a := range accessors {
		if id, ok := members[a]; ok {
			out[a] = Token{Identity: id, Accessors: groups[id]}
		} else {
			out[a] = Token{Identity: a, Accessors: []DeviceAccessor{{Accessor: a}}}
		}
	}
	return out, nil
}
