#!/bin/sh
# demo.sh [CANGA]: canga's main job end to end on a real ext4 disk image,
# every result checked against qemu-img and sha256sum.
set -eu
canga=$(realpath "${1:-bin/canga}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

step() { printf '\n== %s\n' "$*"; }

step "a 256 MiB ext4 disk holding real files (/usr/share/doc, /etc)"
mkdir -p tree
cp -a /usr/share/doc tree/doc 2>/dev/null || true
cp -a /etc tree/etc 2>/dev/null || true
mkfs.ext4 -q -F -d tree disk.raw 256M
qemu-img convert -c -O qcow2 disk.raw disk.qcow2
qemu-img create -q -f qcow2 -b disk.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c "write -P 0x63 1M 4M" -c "write -z 100M 8M" top.qcow2 >/dev/null

step "canga info top.qcow2"
"$canga" info top.qcow2

step "canga check disk.qcow2 top.qcow2"
"$canga" check disk.qcow2
"$canga" check top.qcow2

step "canga digest: image IDs, equal to sha256sum of qemu-img's raw output"
"$canga" digest disk.raw disk.qcow2 top.qcow2 | tee digests
qemu-img convert -O raw top.qcow2 top.raw
want="sha256:$(sha256sum top.raw | cut -d' ' -f1)"
got=$(grep ' top.qcow2$' digests | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "demo: digest $got, qemu-img + sha256sum say $want" >&2; exit 1; }
echo "ok: canga digest agrees with qemu-img convert -O raw | sha256sum"
