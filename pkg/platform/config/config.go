// Package config loads a service's configuration struct from environment
// variables. Each field declares its variable, default and meaning in tags:
//
//	NATSURL string `env:"NATS_URL" default:"nats://127.0.0.1:4222" doc:"NATS server URL."`
//
// Variables are read with the LOCKDOWN_ prefix. Fields tagged secret:"true"
// are never printed by Describe. Load reports every problem at once —
// unparsable values and the struct's own Validate — so an operator fixes
// them in one go.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Prefix is put before every variable name.
const Prefix = "LOCKDOWN_"

// ErrInvalid is returned (wrapped, with every problem) when the
// configuration cannot be used.
var ErrInvalid = errors.New("invalid configuration")

// Validator is implemented by config structs with rules beyond types.
type Validator interface {
	Validate() error
}

// Load fills cfg (a pointer to a struct) from defaults and the environment,
// then validates it.
func Load(cfg any) error {
	return LoadFrom(cfg, os.LookupEnv)
}

// LoadFrom is Load with an explicit environment lookup, for tests.
func LoadFrom(cfg any, lookup func(string) (string, bool)) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: Load needs a pointer to a struct, got %T", cfg)
	}
	var errs []error
	walk(v.Elem(), func(f reflect.StructField, fv reflect.Value) {
		name := Prefix + f.Tag.Get("env")
		raw, ok := lookup(name)
		if !ok {
			raw, ok = f.Tag.Lookup("default")
		}
		if !ok {
			return
		}
		if err := set(fv, raw); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	})
	if val, ok := cfg.(Validator); ok {
		if err := val.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// walk visits every field with an env tag, descending into embedded and
// nested structs.
func walk(v reflect.Value, visit func(reflect.StructField, reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		if !f.IsExported() {
			continue
		}
		if _, ok := f.Tag.Lookup("env"); ok {
			visit(f, fv)
			continue
		}
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Time{}) {
			walk(fv, visit)
		}
	}
}

func set(fv reflect.Value, raw string) error {
	if fv.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 30s, 5m)", raw)
		}
		fv.SetInt(int64(d))
		return nil
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(raw)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", raw)
		}
		fv.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", raw)
		}
		fv.SetFloat(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		fv.SetBool(b)
	case reflect.Slice:
		if fv.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported list type %s", fv.Type())
		}
		var items []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		fv.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("unsupported type %s", fv.Type())
	}
	return nil
}

// Field describes one configuration variable, for docs and --help.
type Field struct {
	Env, Default, Doc string
	Secret            bool
}

// Describe lists the variables of a config struct (a value or pointer).
func Describe(cfg any) []Field {
	v := reflect.Indirect(reflect.ValueOf(cfg))
	var out []Field
	walk(v, func(f reflect.StructField, _ reflect.Value) {
		out = append(out, Field{Env: Prefix + f.Tag.Get("env"), Default: f.Tag.Get("default"),
			Doc: f.Tag.Get("doc"), Secret: f.Tag.Get("secret") == "true"})
	})
	return out
}

// Markdown renders Describe as a table for docs/operations.md.
func Markdown(cfg any) string {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n|---|---|---|\n")
	for _, f := range Describe(cfg) {
		def := "`" + f.Default + "`"
		if f.Default == "" {
			def = "—"
		}
		doc := f.Doc
		if f.Secret {
			doc += " (secret: never logged)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f.Env, def, doc)
	}
	return b.String()
}
