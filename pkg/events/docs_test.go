package events_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/events/credentials"
	"github.com/lockdown/lockdown/pkg/events/readmodel"
	"github.com/lockdown/lockdown/pkg/events/report"
)

var update = flag.Bool("update", false, "rewrite docs/events.md, docs/schemas and deploy/nats/auth.conf from the catalog")

// TestDocs keeps docs/events.md and the JSON Schemas true to the code:
// run `make docs` after changing the catalog.
func TestDocs(t *testing.T) {
	root := filepath.Join("..", "..", "docs")
	files := map[string][]byte{
		filepath.Join(root, "events.md"):                         []byte(events.Markdown()),
		filepath.Join("..", "..", "deploy", "nats", "auth.conf"): []byte(events.NATSAuthConfig()),
	}
	for _, s := range events.Catalog() {
		files[filepath.Join(root, "schemas", string(s.Name)+".v1.json")] = s.MarshalSchema()
	}
	docs := map[string]any{events.BucketIncidents: readmodel.Incident{}, events.BucketReports: report.Report{}, events.BucketPlans: credentials.Plan{}}
	for _, b := range events.Buckets() {
		files[filepath.Join(root, "schemas", b.Schema)] = events.DocumentSchema(docs[b.Name], b.Schema, b.Name, b.Description)
	}
	for path, want := range files {
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != string(want) {
			t.Errorf("%s is out of date with pkg/events: run `make docs`", path)
		}
	}
}
