module github.com/lockdown/lockdown/deploy

go 1.26.0

require (
	github.com/lockdown/lockdown/pkg/events v0.0.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/cloudevents/sdk-go/v2 v2.16.2 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/json-iterator/go v1.1.12 // indirect
	github.com/kr/text v0.2.0 // indirect
	github.com/modern-go/concurrent v0.0.0-20180306012644-bacd9c7ef1dd // indirect
	github.com/modern-go/reflect2 v1.0.2 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
)

replace github.com/lockdown/lockdown/pkg/events => ../pkg/events
