package notify

import "embed"

// defaults are the built-in templates; TEMPLATE_DIR replaces them with a
// folder holding the same four file names.
//
//go:embed templates/*.tmpl
var defaults embed.FS
