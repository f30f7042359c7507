package runner

import "reflect"

// newConfig allocates the struct a config pointer type points to.
func newConfig[C any]() C {
	var zero C
	t := reflect.TypeOf(zero)
	if t == nil || t.Kind() != reflect.Pointer {
		panic("runner: the config type must be a pointer to a struct")
	}
	return reflect.New(t.Elem()).Interface().(C)
}
