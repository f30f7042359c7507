package vaultkv

import (
	"context"
	"errors"
	"net/http"
	"strings"

	vault "github.com/hashicorp/vault/api"
)

// ErrRefused is returned by the logical calls for a request Vault refuses
// for good (400, 404 on a write, 405): the catalogue names something this
// Vault does not have. It fails the entry; an outage waits. A 403 is not
// taken for good: the token may be between its revocation and its
// successor; retried, it ends as poison (dead letter, failed entry) if the
// policy really lacks the path.
var ErrRefused = errors.New("vault refused the request")

// Read returns the data at a full API path (nil when there is none).
func (k *KV) Read(ctx context.Context, path string) (map[string]any, error) {
	return k.data(true, func() (*vault.Secret, error) { return k.c.Logical().ReadWithContext(ctx, path) })
}

// ListAt returns the keys at a full API path (none when it has none;
// folders end in /).
func (k *KV) ListAt(ctx context.Context, path string) ([]string, error) {
	d, err := k.data(true, func() (*vault.Secret, error) { return k.c.Logical().ListWithContext(ctx, path) })
	raw, _ := d["keys"].([]any)
	out := make([]string, 0, len(raw))
	for _, r := range raw {
		if str, ok := r.(string); ok {
			out = append(out, str)
		}
	}
	return out, err
}

// Write writes to a full API path and returns the response's data.
func (k *KV) Write(ctx context.Context, path string, data map[string]any) (map[string]any, error) {
	return k.data(false, func() (*vault.Secret, error) { return k.c.Logical().WriteWithContext(ctx, path, data) })
}

// Patch merges data into the KV v2 secret at a full data path (JSON merge
// patch: fields it does not name keep their values).
func (k *KV) Patch(ctx context.Context, path string, data map[string]any) (map[string]any, error) {
	return k.data(false, func() (*vault.Secret, error) { return k.c.Logical().JSONMergePatch(ctx, path, data) })
}

// data runs one logical call (again once with the token's successor, see
// retry) and returns the response's data: nil for no response, and for a
// 404 when missingIsNone (a read of what does not exist).
func (k *KV) data(missingIsNone bool, op func() (*vault.Secret, error)) (map[string]any, error) {
	s, err := retry(k, op)
	if missingIsNone && notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(err)
	}
	if s == nil {
		return nil, nil
	}
	return s.Data, nil
}

// Gate refuses while Vault has an audit device the baseline does not
// declare: the request that follows carries a new secret (a certificate's
// private key in the response, a generated value in the body).
func (k *KV) Gate(ctx context.Context) error { return k.gate(ctx) }

// classify tells an outage (waited for) from a refusal (fails the entry).
func classify(err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed:
			return errors.Join(ErrRefused, errors.New(strings.Join(re.Errors, "; ")))
		}
	}
	return down(err)
}
