#!/bin/sh
# Fetch Debian's cloud kernel for sandnet VMs (the alternative to sandnet's own kernel,
# scripts/build-kernel; chosen with `[hypervisor.qemu] kernel = "debian-cloud"`) and
# leave it in a stable layout that sandnet-vm's `GuestKernel::locate` reads:
#
#   $SANDNET_KERNEL_DIR/<ver>/vmlinuz         bzImage as shipped
#   $SANDNET_KERNEL_DIR/<ver>/vmlinux         uncompressed ELF (PVH boot), if it could be extracted
#   $SANDNET_KERNEL_DIR/<ver>/modules/*.ko    virtio / virtio-net / virtio-console / vsock modules
#   $SANDNET_KERNEL_DIR/<ver>/version         the kernel release string
#   $SANDNET_KERNEL_DIR/debian-cloud -> <ver>
#   $SANDNET_KERNEL_DIR/current -> <ver>        only when there is no `current` yet
#                                               (scripts/build-kernel points it at sandnet's)
#
# SANDNET_KERNEL_DIR defaults to /var/cache/sandnet/kernel. Idempotent: when
# `debian-cloud` already points at a complete tree, it does nothing (pass --force
# to re-resolve the version and refetch).
#
# This is the only place in sandnet allowed to call apt.
set -eu

DIR="${SANDNET_KERNEL_DIR:-/var/cache/sandnet/kernel}"
META="linux-image-cloud-amd64"
MODULES="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
failover net_failover virtio_net virtio_console \
vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport"
# Modules without which the guest has no network or agent channel.
REQUIRED="virtio virtio_ring virtio_pci failover net_failover virtio_net virtio_console"

FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

log() { echo "guest-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

complete_tree() {
    [ -f "$1/vmlinuz" ] && [ -f "$1/version" ] && [ -d "$1/modules" ] || return 1
    for m in $REQUIRED; do
        [ -f "$1/modules/$m.ko" ] || return 1
    done
}

# The links: `debian-cloud` always, `current` only when nothing else is the default.
link() {
    ln -sfn "$1" "$DIR/debian-cloud"
    [ -e "$DIR/current" ] || ln -sfn "$1" "$DIR/current"
}

if [ "$FORCE" = 0 ] && [ -e "$DIR/debian-cloud" ] && complete_tree "$DIR/debian-cloud"; then
    log "present: $DIR/debian-cloud -> $(readlink "$DIR/debian-cloud")"
    exit 0
fi

command -v apt-cache >/dev/null || die "apt-cache not found (Debian/Ubuntu host required)"

resolve() {
    apt-cache depends "$META" 2>/dev/null \
        | sed -n 's/^ *Depends: *linux-image-\(.*-cloud-amd64\)$/\1/p' | head -n 1
}
VER="$(resolve || true)"
if [ -z "$VER" ]; then
    log "running apt-get update to resolve $META"
    apt-get update -qq >&2 || die "apt-get update failed"
    VER="$(resolve || true)"
fi
[ -n "$VER" ] || die "could not resolve the version behind $META with apt-cache depends"
log "kernel release $VER"

mkdir -p "$DIR"
if [ "$FORCE" = 0 ] && complete_tree "$DIR/$VER"; then
    link "$VER"
    log "present: $DIR/debian-cloud -> $VER"
    exit 0
fi

WORK="$(mktemp -d "$DIR/.work.XXXXXX")"
chmod 755 "$WORK"  # apt-get download drops privileges to _apt when it can
trap 'rm -rf "$WORK"' EXIT INT TERM
(cd "$WORK" && apt-get download "linux-image-$VER" >&2) || die "apt-get download linux-image-$VER failed"
DEB="$(ls "$WORK"/linux-image-"$VER"_*.deb 2>/dev/null | head -n 1)"
[ -n "$DEB" ] || die "downloaded package not found in $WORK"
dpkg-deb -x "$DEB" "$WORK/x" || die "dpkg-deb -x $DEB failed"

OUT="$WORK/out"
mkdir -p "$OUT/modules"
[ -f "$WORK/x/boot/vmlinuz-$VER" ] || die "package has no boot/vmlinuz-$VER"
cp "$WORK/x/boot/vmlinuz-$VER" "$OUT/vmlinuz"
cp "$WORK/x/boot/config-$VER" "$OUT/config" 2>/dev/null || true
printf '%s\n' "$VER" > "$OUT/version"

KMOD="$WORK/x/lib/modules/$VER/kernel"
[ -d "$KMOD" ] || die "package has no lib/modules/$VER/kernel"
for m in $MODULES; do
    f="$(find "$KMOD" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n 1)"
    if [ -z "$f" ]; then
        log "module $m not in the package (built in or absent), skipped"
        continue
    fi
    case "$f" in
        *.ko) cp "$f" "$OUT/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$f" > "$OUT/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" > "$OUT/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$f" > "$OUT/modules/$m.ko" ;;
    esac
done
for m in $REQUIRED; do
    [ -f "$OUT/modules/$m.ko" ] || die "required module $m.ko missing from linux-image-$VER"
done

# Uncompressed ELF vmlinux for PVH boot (about 0.6 s faster under TCG). Best effort:
# find the payload by its magic and decompress it with whatever tool is present.
extract_vmlinux() {
    img="$1"; out="$2"
    for spec in '\x02\x21\x4c\x18:lz4 -dc' '\x28\xb5\x2f\xfd:zstd -qdc' \
                '\xfd\x37\x7a\x58\x5a\x00:xz -dc' '\x1f\x8b\x08:gzip -dc'; do
        magic="${spec%%:*}"; tool="${spec#*:}"
        command -v "${tool%% *}" >/dev/null 2>&1 || continue
        for off in $(grep -obUaP "$magic" "$img" 2>/dev/null | cut -d: -f1 | head -n 4); do
            tail -c +"$((off + 1))" "$img" | $tool > "$out" 2>/dev/null || true
            if [ "$(head -c 4 "$out" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; then
                return 0
            fi
        done
    done
    rm -f "$out"
    return 1
}
if extract_vmlinux "$OUT/vmlinuz" "$OUT/vmlinux"; then
    log "extracted vmlinux (PVH)"
else
    log "could not extract vmlinux; sandnet will boot vmlinuz"
fi

rm -rf "${DIR:?}/$VER"
mv "$OUT" "$DIR/$VER"
link "$VER"
log "installed $DIR/$VER, $DIR/debian-cloud -> $VER"
