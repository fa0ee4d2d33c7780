#!/bin/sh
# Builds the VM tests' guest (a kernel and an initramfs) from Debian packages, once, into a
# cache directory, and prints that directory as its last line of output.
#
#   tests/vm/build-guest.sh [CACHE]        CACHE: $VSWITCHD_VM_CACHE or /tmp/vswitchd-vm
#
# Output: CACHE/guest-HASH/{vmlinux,initramfs.cpio,complete}, where HASH is the md5 of this
# script and guest-init.sh, so editing either builds a new guest (an old one stays for an
# hour, for whoever still runs it). A directory holding `complete` is reused as it is. Callers may run
# this at the same time (tests run in parallel, several test binaries at once): the build holds
# an flock on CACHE/lock, and the others wait for it and then find the guest built.
#
# The kernel is Debian's (linux-image-amd64's current dependency) and userspace one
# busybox-static binary; both .debs are fetched with `apt-get download` into CACHE/debs (kept
# for the next build), unpacked with `dpkg -x`, never installed. The kernel's xz payload is
# unpacked into an ELF `vmlinux`, which QEMU boots through its PVH entry (about 3 s faster
# under TCG than the bzImage). The initramfs holds busybox, the virtio-net modules and
# guest-init.sh as /init. Needs apt-get, dpkg, python3 (lzma), flock, md5sum; root only if the
# package lists are missing (then it runs `apt-get update`). About 8 s and 71 MB of downloads
# from scratch; about 140 MB in CACHE afterwards.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${1:-${VSWITCHD_VM_CACHE:-/tmp/vswitchd-vm}}
HASH=$(cat "$HERE/build-guest.sh" "$HERE/guest-init.sh" | md5sum | cut -c1-12)
OUT="$CACHE/guest-$HASH"
mkdir -p "$CACHE"

exec 9>"$CACHE/lock"
flock 9
if [ -f "$OUT/complete" ]; then
    echo "$OUT"
    exit 0
fi

DEBS="$CACHE/debs"
mkdir -p "$DEBS"
chmod 777 "$DEBS"   # apt's sandbox user _apt downloads there (it warns otherwise)

# 1. The concrete kernel package behind the metapackage.
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'
}
KPKG=$(kernel_package)
if [ -z "$KPKG" ]; then
    echo "build-guest.sh: no package lists; running apt-get update" >&2
    apt-get update -qq >&2
    KPKG=$(kernel_package)
fi
[ -n "$KPKG" ] || { echo "build-guest.sh: cannot resolve linux-image-amd64" >&2; exit 1; }
KVER=${KPKG#linux-image-}

# Guests built from other versions of the scripts more than an hour ago, and kernel packages
# Debian has replaced since, are removed (a QEMU running one has read it already).
find "$CACHE" -maxdepth 2 -path "$CACHE/guest-*/complete" -mmin +60 2>/dev/null | while read -r stale; do
    rm -rf "$(dirname "$stale")"
done
find "$DEBS" -name 'linux-image-*.deb' ! -name "${KPKG}_*.deb" -delete

cd "$DEBS"
ls "$KPKG"_*.deb >/dev/null 2>&1 || apt-get download -q "$KPKG" >&2
ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download -q busybox-static >&2

# 2. Unpack (nothing is installed) into a scratch directory next to the output.
X="$CACHE/build-$HASH"
rm -rf "$X" "$OUT"
mkdir -p "$X/k" "$X/bb" "$OUT"
dpkg -x "$KPKG"_*.deb "$X/k"
dpkg -x busybox-static_*.deb "$X/bb"
python3 - "$X/k/boot/vmlinuz-$KVER" "$OUT/vmlinux" <<'PY'
import lzma, sys
image = open(sys.argv[1], "rb").read()
start = image.find(b"\xfd7zXZ\x00")
if start < 0:
    sys.exit("build-guest.sh: no xz payload in the kernel image")
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(image[start:])
if elf[:4] != b"\x7fELF":
    sys.exit("build-guest.sh: the kernel's payload is not an ELF image")
open(sys.argv[2], "wb").write(elf)
PY
BB="$X/bb/bin/busybox"

# 3. The initramfs tree.
R="$X/root"
mkdir -p "$R/bin" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/lib/modules"
cp "$BB" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
# Debian builds virtio and virtio-net as modules; this is their dependency order (from each
# .ko's depends= field). The kernel has no modules.dep (depmod runs at install), so /init
# insmods them in this order.
MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
MDIR="$X/k/lib/modules/$KVER/kernel"
for m in $MODS; do
    f=$(find "$MDIR" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -n1)
    [ -n "$f" ] || { echo "build-guest.sh: module $m not in $KPKG" >&2; exit 1; }
    case "$f" in
        *.xz) xz -dc "$f" > "$R/lib/modules/$m.ko" ;;
        *.zst) zstd -dcq "$f" > "$R/lib/modules/$m.ko" ;;
        *) cp "$f" "$R/lib/modules/$m.ko" ;;
    esac
done
echo "$MODS" > "$R/lib/modules/order"
cp "$HERE/guest-init.sh" "$R/init"
chmod 755 "$R/init"

# 4. An uncompressed newc cpio, made by busybox's own cpio (hosts often lack one).
( cd "$R" && find . | "$BB" cpio -o -H newc 2>/dev/null ) > "$OUT/initramfs.cpio"
echo "$KPKG" > "$OUT/kernel-package"
rm -rf "$X"   # the unpacked kernel is about 400 MB
touch "$OUT/complete"
echo "build-guest.sh: built $OUT ($KPKG)" >&2
echo "$OUT"
