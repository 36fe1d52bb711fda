#!/usr/bin/env bash
# Build the real fleet v1 tools the lab and the tests run: fleetd and fleetctl (fleet
# v1.0.0) and coreos-cloudinit (v1.14.0), from the source archives in the shared
# third_party folder, offline, with Debian's golang-go. They are test fixtures (the node
# image runs them; the suite validates configs with `coreos-cloudinit -validate`), never
# part of pxeserver.
#
# Usage: tests/lab/build-fleet-tools.sh [OUTDIR]   (default tests/lab/.cache/fleet-tools)
# Prints OUTDIR, which holds fleetd, fleetctl and coreos-cloudinit. Rebuilt only when an
# input changes: this script, either archive, the Go version.
#
# Where the archives are: PXELAB_THIRD_PARTY, else shared/third_party beside the
# repository's main checkout (a clean clone has shared/ next to it; a git worktree
# counts from the repository it belongs to).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/.cache/fleet-tools}
mkdir -p "$out"
out=$(cd "$out" && pwd)

die() {
    echo "build-fleet-tools: $*" >&2
    exit 1
}

third_party() {
    if [ -n "${PXELAB_THIRD_PARTY:-}" ]; then
        echo "$PXELAB_THIRD_PARTY"
        return
    fi
    local top
    top=$(git -C "$here" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) \
        && top=$(dirname "$top") || top=$(cd "$here/../.." && pwd)
    echo "$(dirname "$top")/shared/third_party"
}

src=$(third_party)
fleet_tar=$src/fleet-1.0.0.tar.gz
cloudinit_tar=$src/coreos-cloudinit-1.14.0.tar.gz
for f in "$fleet_tar" "$cloudinit_tar"; do
    [ -f "$f" ] || die "$f is missing: the lab builds fleet and coreos-cloudinit from the" \
        "shared third_party folder; set PXELAB_THIRD_PARTY to the folder that holds" \
        "fleet-1.0.0.tar.gz and coreos-cloudinit-1.14.0.tar.gz"
done
command -v go >/dev/null || die "go is missing: apt-get install golang-go gcc"
command -v gcc >/dev/null || die "gcc is missing (coreos-cloudinit needs cgo): apt-get install gcc"

key=$( {
    go version
    sha256sum "$0" "$fleet_tar" "$cloudinit_tar" | cut -d' ' -f1
} | sha256sum | cut -d' ' -f1)
tools="fleetd fleetctl coreos-cloudinit"
fresh=yes
for t in $tools; do [ -x "$out/$t" ] || fresh=no; done
if [ "$fresh" = yes ] && [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$key" ]; then
    echo "$out"
    exit 0
fi
echo "build-fleet-tools: building fleetd, fleetctl, coreos-cloudinit from $src" >&2

gopath=$(mktemp -d "$(dirname "$out")/gopath.XXXXXX")
trap 'rm -rf "$gopath"' EXIT
org=$gopath/src/github.com/coreos
mkdir -p "$org" "$gopath/bin"
tar -xzf "$fleet_tar" -C "$org" && mv "$org/fleet-1.0.0" "$org/fleet"
tar -xzf "$cloudinit_tar" -C "$org" && mv "$org/coreos-cloudinit-1.14.0" "$org/coreos-cloudinit"
# GOPATH mode with the archives' vendored dependencies: no module proxy, no network.
export GOPATH=$gopath GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local
# The versions the projects' own build scripts stamp in (fleet compares engine versions).
fleet_ld="-X github.com/coreos/fleet/version.Version=1.0.0"
(cd "$org/fleet" && CGO_ENABLED=0 go build -ldflags "$fleet_ld" -o "$gopath/bin/fleetd" . \
    && CGO_ENABLED=0 go build -ldflags "$fleet_ld" -o "$gopath/bin/fleetctl" ./fleetctl) >&2 \
    || die "go build of fleet failed (see above)"
# coreos-cloudinit's VMware datasource needs cgo: it is linked against glibc.
(cd "$org/coreos-cloudinit" && CGO_ENABLED=1 go build -ldflags "-X main.version=v1.14.0" -o "$gopath/bin/coreos-cloudinit" .) >&2 \
    || die "go build of coreos-cloudinit failed (see above)"
for t in $tools; do
    mv -f "$gopath/bin/$t" "$out/$t"
done
echo "$key" >"$out/stamp"
echo "build-fleet-tools: done: $("$out/fleetd" --version 2>&1 | head -n 1);" \
    "$("$out/coreos-cloudinit" -version)" >&2
echo "$out"
