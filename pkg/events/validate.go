package events

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
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

// ErrInvalidID is returned for an id that is not of the form Lockdown
// accepts from outside (a breach's event id) or for a tenant.
var ErrInvalidID = errors.New("invalid id")

var (
	externalID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`)
	tenantID   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
)

// ValidExternalID checks an event id chosen outside Lockdown (a breach's,
// by the SIEM or the HTTP intake): letters, digits and . _ : @ -, at most
// 128. Internal ids are derived from it (the detection's key, spans): no
// slash, space or control character may come in.
func ValidExternalID(id string) error {
	if !externalID.MatchString(id) {
		return fmt.Errorf("%w: event id %q: letters, digits and . _ : @ - only, 1 to 128 of them", ErrInvalidID, id)
	}
	return nil
}

// ValidTenantID checks a tenant id: lowercase letters, digits and -, not
// starting with -, at most 63 (a DNS label). Tenant ids become Vault paths
// (tenants/{id}/ssh), event ids and an SSH key's comment: a slash would
// reach another tenant's secrets, a newline would add a line to
// authorized_keys.
func ValidTenantID(id string) error {
	if !tenantID.MatchString(id) {
		return fmt.Errorf("%w: tenant id %q: lowercase letters, digits and -, 1 to 63, not starting with -", ErrInvalidID, id)
	}
	return nil
}
