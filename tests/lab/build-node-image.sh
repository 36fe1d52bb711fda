#!/usr/bin/env bash
# Build the lab's node image: a STAND-IN FOR CoreOS Container Linux, whose images cannot
# be fetched on this machine. It is made from Debian packages only:
#   - the kernel of linux-image-*-cloud-amd64 (apt-get download + dpkg -x; nothing is
#     installed), with the virtio network modules it needs to reach the network;
#   - an initramfs of busybox-static (cpio, gzip) whose /init (tests/lab/node/init) does
#     DHCP, fetches the cloud-config named on the kernel command line, applies its
#     hostname and phones home `ready`, then heartbeats, as a CoreOS node's units would.
#
# Usage: tests/lab/build-node-image.sh [OUTDIR]     (default tests/lab/.cache/node-image)
# Prints OUTDIR. OUTDIR holds vmlinuz and initrd.cpio.gz; it is rebuilt only when an input
# changes (this script, the files in tests/lab/node/, the kernel package's version,
# busybox's version). Needs `apt-get update` to have run once (for apt-get download);
# PXELAB_KERNEL_PACKAGE picks another kernel package than the current cloud kernel.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/.cache/node-image}
cache=$(dirname "$out")
debs=$cache/debs
mkdir -p "$out" "$debs"
out=$(cd "$out" && pwd)

die() {
    echo "build-node-image: $*" >&2
    exit 1
}

for tool in apt-get apt-cache dpkg dpkg-query cpio gzip sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (install it; it comes with Debian)"
done
busybox=/bin/busybox
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" \
    || die "busybox-static is not installed: apt-get install busybox-static"
"$busybox" --list | grep -qx udhcpc || die "$busybox has no udhcpc; install busybox-static"

# The kernel package: the one the cloud kernel meta-package points at now.
package=${PXELAB_KERNEL_PACKAGE:-}
if [ -z "$package" ]; then
    package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n 1)
    [ -n "$package" ] || die "apt-cache knows no linux-image-cloud-amd64: run apt-get update first"
fi
version=$(apt-cache policy "$package" 2>/dev/null | sed -n 's/^ *Candidate: //p')
[ -n "$version" ] && [ "$version" != "(none)" ] \
    || die "apt-cache has no candidate for $package: run apt-get update first"

# Everything the image is made of; a change to any of them rebuilds it.
key=$( {
    echo "kernel $package $version"
    echo "busybox $(dpkg-query -W -f='${Version}' busybox-static)"
    # Contents only: the script is called by relative and absolute paths.
    cat "$0" "$here"/node/* | sha256sum
} | sha256sum | cut -d' ' -f1)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$key" ] \
    && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.cpio.gz" ]; then
    echo "$out"
    exit 0
fi
echo "build-node-image: building the node image (kernel $package $version) in $out" >&2

deb=$(find "$debs" -maxdepth 1 -name "${package}_*.deb" | head -n 1)
if [ -z "$deb" ] || ! dpkg-deb -f "$deb" Version | grep -qxF "$version"; then
    rm -f "$debs/${package}"_*.deb
    # apt-get download writes to the current folder; as root it warns that _apt cannot
    # write there, which is harmless.
    (cd "$debs" && apt-get download -q "$package=$version" >&2) \
        || die "apt-get download $package=$version failed"
    deb=$(find "$debs" -maxdepth 1 -name "${package}_*.deb" | head -n 1)
fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg -x "$deb" "$work/pkg"
kver=$(ls "$work/pkg/lib/modules")
[ -f "$work/pkg/boot/vmlinuz-$kver" ] || die "no /boot/vmlinuz-$kver in $deb"

# The modules the NIC needs, with their dependencies, from the package's own module
# metadata (busybox depmod writes modules.dep; the package ships none).
"$busybox" depmod -b "$work/pkg" "$kver"
moddir=lib/modules/$kver
wanted="virtio_pci virtio_net"
closure() {
    local name=$1 path deps
    path=$(grep -E "(^|/)$name\.ko(\.[a-z]+)?:" "$work/pkg/$moddir/modules.dep" | cut -d: -f1)
    [ -n "$path" ] || die "module $name is not in $package"
    deps=$(grep -E "^$path:" "$work/pkg/$moddir/modules.dep" | cut -d: -f2)
    echo "$path"
    echo "$deps" | tr ' ' '\n' | sed '/^$/d'
}
modules=$(for m in $wanted; do closure "$m"; done | sort -u)
for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev failover net_failover; do
    echo "$modules" | grep -Eq "/$m\.ko" \
        || echo "build-node-image: note: $m is not needed by $package's virtio_net" >&2
done

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,etc,"$moddir"}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
for m in $modules; do
    mkdir -p "$root/$moddir/$(dirname "$m")"
    cp "$work/pkg/$moddir/$m" "$root/$moddir/$m"
done
# A modules.dep for just these modules, so busybox modprobe resolves the order itself.
grep -E "^($(echo "$modules" | sed 's/[.]/[.]/g' | paste -sd'|'))": \
    "$work/pkg/$moddir/modules.dep" >"$root/$moddir/modules.dep"
echo "$wanted" | tr ' ' '\n' >"$root/etc/modules"
install -m 0755 "$here/node/init" "$root/init"
install -m 0755 "$here/node/udhcpc.script" "$root/etc/udhcpc.script"
echo "stand-in for CoreOS built by tests/lab/build-node-image.sh from $package $version" \
    >"$root/etc/pxelab-release"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) \
    | gzip -9n >"$work/initrd.cpio.gz"
cp "$work/pkg/boot/vmlinuz-$kver" "$work/vmlinuz"
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initrd.cpio.gz" "$out/initrd.cpio.gz"
echo "$package $version" >"$out/kernel-package"
echo "$key" >"$out/stamp"
echo "build-node-image: done: $(du -h "$out/vmlinuz" | cut -f1) kernel," \
    "$(du -h "$out/initrd.cpio.gz" | cut -f1) initrd" >&2
echo "$out"
