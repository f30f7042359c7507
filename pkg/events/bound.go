package events

import (
	"errors"
	"reflect"
	"strconv"
	"unicode/utf8"
)

// Every event is bounded by the contract, whatever its producer was given
// (a SIEM's 200 KB summary, a Vault with 100,000 policies, a platform of
// 100,000 tenants): a message over the NATS server's max_payload (1 MiB by
// default) cannot be published at all, and one stuck event would hold
// every event behind it in an outbox.
//
// The bounds are declared on the data structs:
//   - a string field is cut at DefaultTextLimit bytes of its JSON encoding,
//     or at its `max:"N"` tag ("…" marks the cut);
//   - a list field carries at most its `maxItems:"N"` items (every list
//     declares one); a `total:"<json name>"` tag names the int field that
//     then holds the list's full length, so a reader knows what was cut;
//     `itemMax:"N"` bounds each string item.
//
// Bound applies them (New and DataAs call it), and New refuses an event
// whose encoding still exceeds MaxEventBytes. TestEventBounds builds the
// largest value of every event type and checks it stays under.
const (
	// MaxEventBytes is the largest encoded event (CloudEvents structured
	// JSON) Lockdown publishes: half of NATS's default max_payload.
	MaxEventBytes = 512 << 10
	// DefaultTextLimit bounds a string field without a max tag.
	DefaultTextLimit = 1024
)

// ErrTooLarge is returned by New for an event whose encoding exceeds
// MaxEventBytes even after Bound: a struct whose bounds are too loose.
var ErrTooLarge = errors.New("events: event larger than the contract allows")

// truncationMark ends a string that Bound cut.
const truncationMark = "…"

// Bound cuts data's strings and lists to the contract's declared limits,
// in place (data must be a pointer to a struct; lists are replaced by cut
// copies, never cut in the caller's backing array), and reports whether
// anything was cut.
func Bound(data any) bool {
	v := reflect.ValueOf(data)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return false
	}
	return boundValue(v.Elem())
}

func boundValue(v reflect.Value) bool {
	if v.Kind() != reflect.Struct {
		return false
	}
	cut := false
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		switch fv.Kind() {
		case reflect.String:
			if s, c := CutText(fv.String(), tagInt(f.Tag, "max", DefaultTextLimit)); c {
				fv.SetString(s)
				cut = true
			}
		case reflect.Slice:
			if fv.Type().Elem().Kind() == reflect.Uint8 {
				continue // []byte: bounded by its producer (dead letters)
			}
			n := fv.Len()
			if n == 0 {
				continue
			}
			keep := n
			if limit := tagInt(f.Tag, "maxItems", -1); limit >= 0 && n > limit {
				if total := f.Tag.Get("total"); total != "" {
					setTotal(v, total, n)
				}
				keep = limit
				cut = true
			}
			// Items are cut in a copy of what is kept: the caller's slice
			// stays as it was.
			own := reflect.MakeSlice(fv.Type(), keep, keep)
			reflect.Copy(own, fv.Slice(0, keep))
			fv.Set(own)
			itemMax := tagInt(f.Tag, "itemMax", DefaultTextLimit)
			for j := range fv.Len() {
				item := fv.Index(j)
				switch item.Kind() {
				case reflect.String:
					if s, c := CutText(item.String(), itemMax); c {
						item.SetString(s)
						cut = true
					}
				case reflect.Struct:
					cut = boundValue(item) || cut
				}
			}
		case reflect.Struct:
			cut = boundValue(fv) || cut
		}
	}
	return cut
}

// setTotal writes n into the int field whose JSON name is name, unless it
// already holds more (a producer that cut the list itself).
func setTotal(v reflect.Value, name string, n int) {
	t := v.Type()
	for i := range t.NumField() {
		if json, _, ok := jsonName(t.Field(i)); ok && json == name {
			if fv := v.Field(i); fv.CanInt() && fv.Int() < int64(n) {
				fv.SetInt(int64(n))
			}
			return
		}
	}
}

func tagInt(tag reflect.StructTag, key string, def int) int {
	if s := tag.Get(key); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
	}
	return def
}

// CutText cuts s so that its JSON encoding (Go's, which escapes <, > and &
// as \u003c) takes at most limit bytes, marking the cut with "…"; it
// reports whether it cut. Cuts fall on rune boundaries.
func CutText(s string, limit int) (string, bool) {
	if jsonLen(s) <= limit {
		return s, false
	}
	budget := limit - len(truncationMark)
	used, end := 0, 0
	for i, r := range s {
		w := runeJSONLen(r, s[i:])
		if used+w > budget {
			break
		}
		used += w
		_, size := utf8.DecodeRuneInString(s[i:])
		end = i + size
	}
	return s[:end] + truncationMark, true
}

// jsonLen is the length of s inside a JSON string as encoding/json writes it.
func jsonLen(s string) int {
	n := 0
	for i, r := range s {
		n += runeJSONLen(r, s[i:])
	}
	return n
}

func runeJSONLen(r rune, rest string) int {
	switch {
	case r == utf8.RuneError:
		if _, size := utf8.DecodeRuneInString(rest); size == 1 {
			return 6 // invalid byte: written as \ufffd
		}
		return 3
	case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t':
		return 2
	case r < 0x20 || r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029':
		return 6
	default:
		return utf8.RuneLen(r)
	}
}

// bounded returns a pointer to a bounded copy of data (a struct or a
// pointer to one).
func bounded(data any) any {
	v := reflect.ValueOf(data)
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return data
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return data
	}
	p := reflect.New(v.Type())
	p.Elem().Set(v)
	Bound(p.Interface())
	return p.Interface()
}
