#!/usr/bin/env bash
# Build the lab's REAL node images: a Debian 12 systemd system that runs the real
# coreos-cloudinit and fleet, packed whole as a PXE initramfs (the OS runs from RAM, as
# Container Linux's PXE image did). Two flavours, both from Debian packages (mmdebstrap)
# plus coreos-cloudinit, fleetd and fleetctl built by build-fleet-tools.sh:
#
#   container-linux.cpio.zst shaped like CoreOS Container Linux where the served configs
#       rely on it: etcd2.service (Debian's etcd 3.4 as the v2 proxy) and fleet.service
#       driven by the drop-ins coreos-cloudinit writes, fleet.socket and fleetctl,
#       user-cloudinit-proc-cmdline.service, /usr/share/coreos/update.conf, DHCP on the
#       boot NIC; docker.service and locksmithd.service are stand-ins that run nothing.
#   flatcar.cpio.zst shaped like Flatcar: the same without etcd and fleet of its own
#       (flatcar.yaml.j2 fetches both from pxeserver's assets/bin/).
#
# What differs from the real images is in docs/LAB.md. The kernel and its virtio modules
# are those of the stand-in image (build-node-image.sh): Debian's cloud kernel.
#
# Usage: tests/lab/build-real-image.sh [OUTDIR]    (default tests/lab/.cache/real-image)
# Prints OUTDIR, which holds vmlinuz, container-linux.cpio.zst, flatcar.cpio.zst. Needs
# root (mmdebstrap, device nodes) and `apt-get update` to have run. Rebuilt only when an
# input changes: this script, the files under tests/lab/real/, the Debian packages'
# candidate versions and sources, the kernel, the fleet tools.
# PXELAB_APT_SOURCES: the apt sources mmdebstrap uses (default: this machine's Debian ones).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/.cache/real-image}
cache=$here/.cache
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)

die() {
    echo "build-real-image: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap builds the root file system as root)"
for tool in mmdebstrap apt-cache cpio zstd sha256sum chroot; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install mmdebstrap cpio zstd"
done

sources=${PXELAB_APT_SOURCES:-}
if [ -z "$sources" ]; then
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        [ -s "$f" ] && sources=$f && break
    done
fi
[ -n "$sources" ] && [ -s "$sources" ] \
    || die "no Debian apt sources found; set PXELAB_APT_SOURCES to a sources.list or .sources file"

# Debian packages of both flavours; etcd-server is removed from the Flatcar one.
packages=systemd,systemd-sysv,udev,dbus,curl,ca-certificates,iproute2,kmod,procps,etcd-server
stand_in=$("$here/build-node-image.sh")
tools=$("$here/build-fleet-tools.sh")

versions=$(for p in ${packages//,/ }; do
    v=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    [ -n "$v" ] && [ "$v" != "(none)" ] || die "apt-cache has no candidate for $p: run apt-get update"
    echo "$p $v"
done)

# -- the root file system: mmdebstrap, cached on its own (the slow part) -------------------
rootfs=$cache/real-rootfs
mkdir -p "$rootfs"
rootfs_key=$( {
    echo "$versions"
    mmdebstrap --version
    sha256sum "$sources" | cut -d' ' -f1
    sed -n '/^# -- the root file system/,/^# -- end of the root file system/p' "$0"
} | sha256sum | cut -d' ' -f1)
if [ ! -s "$rootfs/rootfs.tar" ] || [ "$(cat "$rootfs/stamp" 2>/dev/null)" != "$rootfs_key" ]; then
    echo "build-real-image: mmdebstrap bookworm ($packages)" >&2
    rm -rf "$rootfs/rootfs.tar" "$rootfs/rootfs.tar.part" "$rootfs/stamp"
    # Trimmed as it is installed: no documentation, manual pages or translations.
    mmdebstrap --variant=minbase --format=tar --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$rootfs/rootfs.tar.part" "$sources" </dev/null >&2 \
        || die "mmdebstrap failed (see above)"
    mv -f "$rootfs/rootfs.tar.part" "$rootfs/rootfs.tar"
    echo "$rootfs_key" >"$rootfs/stamp"
fi
# -- end of the root file system ---------------------------------------------------------

key=$( {
    echo "$rootfs_key"
    cat "$stand_in/stamp" "$tools/stamp"
    sha256sum <"$0"  # the content only: the script is called by relative and absolute paths
    (cd "$here/real" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
} | sha256sum | cut -d' ' -f1)
flavours="container-linux flatcar"
fresh=yes
for f in $flavours; do [ -s "$out/$f.cpio.zst" ] || fresh=no; done
if [ "$fresh" = yes ] && [ -s "$out/vmlinuz" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$key" ]; then
    echo "$out"
    exit 0
fi

work=$(mktemp -d "$cache/real-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The stand-in's initramfs carries exactly the kernel modules the NIC needs.
mkdir -p "$work/stand-in"
(cd "$work/stand-in" && zcat "$stand_in/initrd.cpio.gz" | cpio -idm --quiet 'lib/modules/*')
kver=$(ls "$work/stand-in/lib/modules")

build_flavour() {
    local flavour=$1 root=$work/$1
    mkdir -p "$root"
    tar -xf "$rootfs/rootfs.tar" -C "$root"
    cp -a "$here/real/common/." "$root/"
    [ -d "$here/real/$flavour" ] && cp -a "$here/real/$flavour/." "$root/"

    # Trim what a running node never reads: package manager state and caches, perl
    # (only package scripts use it), charset converters, the hardware database.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/* "$root"/var/log/* \
        "$root"/usr/lib/x86_64-linux-gnu/perl "$root"/usr/share/perl \
        "$root"/usr/lib/x86_64-linux-gnu/gconv "$root"/usr/lib/udev/hwdb.bin \
        "$root"/usr/lib/udev/hwdb.d "$root"/etc/udev/hwdb.bin

    # The kernel's virtio modules, indexed so that udev loads them by device.
    mkdir -p "$root/usr/lib/modules"
    cp -a "$work/stand-in/lib/modules/$kver" "$root/usr/lib/modules/"
    rm -f "$root/usr/lib/modules/$kver/modules.dep"
    chroot "$root" depmod "$kver"  # the image's own kmod

    install -m 0755 "$tools/coreos-cloudinit" "$root/usr/bin/coreos-cloudinit"
    if [ "$flavour" = container-linux ]; then
        install -m 0755 "$tools/fleetd" "$root/usr/bin/fleetd"
        install -m 0755 "$tools/fleetctl" "$root/usr/bin/fleetctl"
    else
        # Flatcar ships neither etcd nor fleet: the served config fetches them.
        rm -f "$root"/usr/bin/etcd "$root"/usr/bin/etcdctl
    fi
    # Debian's etcd.service would start a member of its own: Container Linux starts
    # nothing of etcd unless the config asks (etcd2.service, from the drop-in). Removed,
    # not masked: etcd2.service conflicts with etcd.service, and starting it fails while
    # the unit it conflicts with is masked.
    # Its alias etcd2.service would shadow Container Linux's etcd2.service.
    rm -f "$root"/etc/systemd/system/multi-user.target.wants/etcd.service \
        "$root"/etc/systemd/system/etcd2.service \
        "$root"/usr/lib/systemd/system/etcd.service "$root"/etc/init.d/etcd \
        "$root"/etc/rc?.d/[SK]??etcd

    # Container Linux's user, for ssh_authorized_keys (coreos-cloudinit: update-ssh-keys).
    chroot "$root" useradd --create-home --shell /bin/bash --user-group core
    local wants=$root/etc/systemd/system/multi-user.target.wants
    mkdir -p "$wants" "$root/etc/systemd/system/network-online.target.wants"
    for unit in systemd-networkd.service user-cloudinit-proc-cmdline.service pxelab-console.service; do
        ln -sf "/usr/lib/systemd/system/$unit" "$wants/$unit"
    done
    ln -sf /usr/lib/systemd/system/systemd-networkd-wait-online.service \
        "$root/etc/systemd/system/network-online.target.wants/"
    mkdir -p "$root/etc/systemd/system/sockets.target.wants"
    ln -sf /usr/lib/systemd/system/systemd-networkd.socket "$root/etc/systemd/system/sockets.target.wants/"
    # Generators that find nothing on these machines (no disks, no SysV scripts, no
    # encrypted volumes): each runs at boot and at every reload coreos-cloudinit asks for,
    # seconds under emulation.
    for g in systemd-sysv-generator systemd-rc-local-generator systemd-gpt-auto-generator \
        systemd-hibernate-resume-generator systemd-bless-boot-generator \
        systemd-cryptsetup-generator systemd-veritysetup-generator \
        systemd-integritysetup-generator systemd-system-update-generator \
        systemd-getty-generator; do
        rm -f "$root/usr/lib/systemd/system-generators/$g"
    done
    # Trimmed boot: no logins (the lab reads the serial console; nothing logs in), no
    # package-manager timers, no file-system maintenance on a RAM disk.
    for unit in getty@tty1.service serial-getty@ttyS0.service getty.target \
        systemd-logind.service e2scrub_reap.service e2scrub_all.timer apt-daily.timer \
        apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer \
        systemd-update-utmp.service systemd-update-utmp-runlevel.service; do
        ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done
    # Each machine is a new machine: an empty machine-id is made anew at every boot
    # (fleet registers machines by it).
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"
    echo "pxelab" >"$root/etc/hostname"
    # Names resolve from /etc/hosts alone: the lab has no DNS server, and the build
    # machine's resolv.conf (which mmdebstrap copies) names servers the VMs must never
    # send to. etcd looks up "localhost" for its default URLs.
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    echo "# no name servers: the lab's nodes resolve through /etc/hosts only" >"$root/etc/resolv.conf"
    # Everything the services log reaches the serial console, which the lab keeps.
    mkdir -p "$root/etc/systemd/journald.conf.d"
    printf '[Journal]\nForwardToConsole=yes\nMaxLevelConsole=info\n' \
        >"$root/etc/systemd/journald.conf.d/pxelab-console.conf"
    echo "$flavour-shaped lab image (Debian $(cat "$root/etc/debian_version")), built by" \
        "tests/lab/build-real-image.sh" >"$root/etc/pxelab-release"
    ln -sf /sbin/init "$root/init"

    # zstd: the kernel unpacks it about three times faster than gzip, which is ~20 s of
    # every boot under emulation.
    (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) \
        | zstd -q -12 -T0 >"$work/$flavour.cpio.zst"
    echo "build-real-image: $flavour: $(du -sh "$root" | cut -f1) unpacked," \
        "$(du -h "$work/$flavour.cpio.zst" | cut -f1) packed" >&2
    rm -rf "$root"
}

echo "build-real-image: building $flavours in $out" >&2
for f in $flavours; do
    build_flavour "$f"
done
cp "$stand_in/vmlinuz" "$work/vmlinuz"
for f in $flavours; do mv -f "$work/$f.cpio.zst" "$out/$f.cpio.zst"; done
mv -f "$work/vmlinuz" "$out/vmlinuz"
echo "$key" >"$out/stamp"
echo "$out"
