package events_test

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
)

// TestEventBounds builds, for every event type of the catalog, the largest
// value its producers could be handed — every string an attacker's 200 KB
// of '<' (six bytes each once JSON-escaped), every list far longer than
// its bound — and checks the event New makes stays under MaxEventBytes.
// Every list of every event must declare its bound.
func TestEventBounds(t *testing.T) {
	for _, spec := range events.Catalog() {
		t.Run(string(spec.Name)+" stays under the bound at its worst", func(t *testing.T) {
			v := reflect.New(spec.DataType()).Elem()
			fill(t, v, "")
			ev, err := events.New(spec.Name, "/test", v.Interface())
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			body, err := events.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			if len(body) > events.MaxEventBytes {
				t.Fatalf("%d bytes, bound %d", len(body), events.MaxEventBytes)
			}
			t.Logf("%s: %d bytes at its worst", spec.Name, len(body))
		})
	}

	t.Run("an assessment of 100,000 tenants and 100,000 actors stays under the bound and says what it cut", func(t *testing.T) {
		tenants := make([]string, 100_000)
		for i := range tenants {
			tenants[i] = fmt.Sprintf("tenant-%06d", i)
		}
		actors := make([]events.Actor, 100_000)
		for i := range actors {
			actors[i] = events.Actor{Key: fmt.Sprintf("token:%d", i), Tenants: tenants, Reasons: []string{"denied"}}
		}
		d := events.AssessmentCompletedData{IncidentID: "i", Scope: "widespread", AffectedTenants: tenants, Actors: actors}
		ev, err := events.New(events.AssessmentCompleted, "/test", d)
		if err != nil {
			t.Fatal(err)
		}
		if body, _ := events.Marshal(ev); len(body) > events.MaxEventBytes {
			t.Fatalf("%d bytes", len(body))
		}
		got, err := events.DataAs[events.AssessmentCompletedData](ev)
		if err != nil {
			t.Fatal(err)
		}
		if got.AffectedTotal != 100_000 || got.ActorsTotal != 100_000 || got.Actors[0].TenantsTotal != 100_000 || len(got.Actors[0].Tenants) != 20 {
			t.Fatalf("totals: affected %d, actors %d, an actor's tenants %d (%d listed)", got.AffectedTotal, got.ActorsTotal, got.Actors[0].TenantsTotal, len(got.Actors[0].Tenants))
		}
		if len(d.Actors[0].Tenants) != 100_000 {
			t.Fatal("New cut the caller's own slice")
		}
	})

	t.Run("a forged 200 KB summary is cut on decode, not refused", func(t *testing.T) {
		body := fmt.Sprintf(`{"specversion":"1.0","id":"b-1","type":"%s","source":"/siem","time":"%s","datacontenttype":"application/json","data":{"summary":%q,"severity":"critical"}}`,
			events.SpecOf(events.BreachDetected).Type(), time.Now().UTC().Format(time.RFC3339), strings.Repeat("<", 200_000))
		ev, _, err := events.Decode(nil, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		d, err := events.DataAs[events.BreachDetectedData](ev)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Summary) > events.DefaultTextLimit || !strings.HasSuffix(d.Summary, "…") {
			t.Fatalf("summary of %d bytes", len(d.Summary))
		}
	})
}

// fill sets v to the worst case its type allows.
func fill(t *testing.T, v reflect.Value, path string) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Now()))
			return
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			fv := v.Field(i)
			name := path + "." + f.Name
			switch {
			case fv.Kind() == reflect.String:
				if enum := f.Tag.Get("enum"); enum != "" {
					fv.SetString(longest(strings.Split(enum, ",")))
					continue
				}
				fv.SetString(strings.Repeat("<", 200_000))
			case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Uint8:
				fv.SetBytes(make([]byte, events.DeadLetterDataLimit))
			case fv.Kind() == reflect.Slice:
				limit, err := strconv.Atoi(f.Tag.Get("maxItems"))
				if err != nil {
					t.Fatalf("%s: a list without maxItems", name)
				}
				n := limit + 5
				s := reflect.MakeSlice(fv.Type(), n, n)
				for j := range n {
					if s.Index(j).Kind() == reflect.String {
						s.Index(j).SetString(strings.Repeat("<", 200_000))
						continue
					}
					fill(t, s.Index(j), name)
				}
				fv.Set(s)
			default:
				fill(t, fv, name)
			}
		}
	case reflect.Int, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint64:
		v.SetUint(1)
	case reflect.Bool:
		v.SetBool(true)
	}
}

func longest(values []string) string {
	out := ""
	for _, v := range values {
		if len(v) > len(out) {
			out = v
		}
	}
	return out
}
