package events

import (
	"encoding/json"
	"reflect"
	"strings"
	"time"
)

// JSONSchema returns the JSON Schema (draft 2020-12) of the event's data,
// derived from its Go struct: json tags name the properties, fields without
// omitempty are required, doc tags describe and enum tags restrict them.
func (s Spec) JSONSchema() map[string]any {
	schema := schemaOf(s.DataType())
	schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	schema["$id"] = "https://lockdown.dev/schemas/" + string(s.Name) + ".v1.json"
	schema["title"] = s.Type()
	schema["description"] = s.Description
	return schema
}

// MarshalSchema renders the schema as indented JSON.
func (s Spec) MarshalSchema() []byte {
	b, _ := json.MarshalIndent(s.JSONSchema(), "", "  ") // maps of plain values always marshal
	return append(b, '\n')
}

// DocumentSchema renders the JSON Schema of a document the contract
// declares outside the catalog (the read model's values), derived from
// its Go type as the events' schemas are; file names its docs/schemas file.
func DocumentSchema(v any, file, title, description string) []byte {
	schema := schemaOf(reflect.TypeOf(v))
	schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	schema["$id"] = "https://lockdown.dev/schemas/" + file
	schema["title"] = title
	schema["description"] = description
	b, _ := json.MarshalIndent(schema, "", "  ") // maps of plain values always marshal
	return append(b, '\n')
}

var timeType = reflect.TypeOf(time.Time{})

func schemaOf(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return map[string]any{"type": "string", "contentEncoding": "base64"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint64, reflect.Uint32, reflect.Uint:
		return map[string]any{"type": "integer"}
	case reflect.Float64, reflect.Float32:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case reflect.Pointer:
		return schemaOf(t.Elem())
	case reflect.Struct:
		props := map[string]any{}
		required := []string{}
		for _, f := range reflect.VisibleFields(t) {
			name, omitempty, ok := jsonName(f)
			if !ok {
				continue
			}
			p := schemaOf(f.Type)
			if d := f.Tag.Get("doc"); d != "" {
				p["description"] = d
			}
			if e := f.Tag.Get("enum"); e != "" {
				p["enum"] = strings.Split(e, ",")
			}
			if n := tagInt(f.Tag, "maxItems", -1); n >= 0 {
				p["maxItems"] = n // more are cut (bound.go), the total field counts them
			}
			props[name] = p
			if !omitempty {
				required = append(required, name)
			}
		}
		return map[string]any{"type": "object", "properties": props, "required": required}
	}
	return map[string]any{}
}

func jsonName(f reflect.StructField) (name string, omitempty, ok bool) {
	if !f.IsExported() {
		return "", false, false
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return "", false, false
	}
	parts := strings.Split(tag, ",")
	name = parts[0]
	if name == "" {
		name = f.Name
	}
	for _, p := range parts[1:] {
		if p == "omitempty" || p == "omitzero" {
			omitempty = true
		}
	}
	return name, omitempty, true
}

// fields lists the data's top-level fields for docs/events.md.
func (s Spec) fields() []docField {
	var out []docField
	for _, f := range reflect.VisibleFields(s.DataType()) {
		name, omitempty, ok := jsonName(f)
		if !ok {
			continue
		}
		typ, _ := schemaOf(f.Type)["type"].(string)
		if f.Type == timeType {
			typ = "RFC 3339 time"
		}
		out = append(out, docField{Name: name, Type: typ, Required: !omitempty, Doc: f.Tag.Get("doc")})
	}
	return out
}

type docField struct {
	Name, Type, Doc string
	Required        bool
}
