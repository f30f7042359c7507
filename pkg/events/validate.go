package events

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Validator is implemented by event data with rules beyond the ones the
// struct tags state (see Validate).
type Validator interface {
	Validate() error
}

// Validate checks event data against its contract and reports every problem
// at once: a string field without omitempty is required; a string field with
// an enum tag takes only the listed values; then the data's own Validate
// method, if it has one, adds its rules. The JSON Schema states the same
// rules, derived from the same tags.
func Validate(data any) error {
	v := reflect.Indirect(reflect.ValueOf(data))
	if v.Kind() != reflect.Struct {
		return fmt.Errorf("event data must be a struct, got %T", data)
	}
	var problems []string
	for _, f := range reflect.VisibleFields(v.Type()) {
		name, omitempty, ok := jsonName(f)
		fv := v.FieldByIndex(f.Index)
		if !ok || fv.Kind() != reflect.String {
			continue
		}
		value := fv.String()
		if strings.TrimSpace(value) == "" {
			if !omitempty {
				problems = append(problems, name+" is required")
			}
			continue
		}
		if enum := f.Tag.Get("enum"); enum != "" && !slices.Contains(strings.Split(enum, ","), value) {
			problems = append(problems, fmt.Sprintf("%s %q is not one of %s", name, value, strings.ReplaceAll(enum, ",", ", ")))
		}
	}
	if val, ok := data.(Validator); ok {
		if err := val.Validate(); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "; "))
}
