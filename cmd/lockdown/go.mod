module github.com/lockdown/lockdown/cmd/lockdown

go 1.26
