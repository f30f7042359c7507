module github.com/lockdown/lockdown/testkit

go 1.26.0

require github.com/lockdown/lockdown/pkg/platform v0.0.0

replace (
	github.com/lockdown/lockdown/pkg/events => ../pkg/events
	github.com/lockdown/lockdown/pkg/platform => ../pkg/platform
)
