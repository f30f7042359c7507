#!/usr/bin/env bash
# build-tool.sh <tools module dir> <package> <output>: build one of the
# real servers (or the linter) from its pinned tools module, through a
# cache shared by every clone on this machine. The cache key is the
# module's go.mod and go.sum and the Go version: the same pins give the
# same binary, so a second clone copies it (seconds) instead of building
# it (Vault: ~20 minutes on two cores).
set -euo pipefail
dir=$1 pkg=$2 out=$3
cache=${LOCKDOWN_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lockdown-tools}
key=$( (cat "$dir/go.mod" "$dir/go.sum"; echo "$pkg"; go env GOVERSION GOOS GOARCH) | sha256sum | cut -c1-16)
cached="$cache/$(basename "$out")-$key"
mkdir -p "$(dirname "$out")"
if [ -x "$cached" ]; then
	cp "$cached" "$out.tmp" && mv "$out.tmp" "$out"
	echo "$(basename "$out"): from the tools cache ($cached)"
	exit 0
fi
(cd "$dir" && GOWORK=off go build -o "$out.tmp" "$pkg")
mv "$out.tmp" "$out"
mkdir -p "$cache"
cp "$out" "$cached.tmp.$$" && mv "$cached.tmp.$$" "$cached"
