#!/bin/sh
# demo.sh [CANGA]: canga's main job end to end on a real ext4 disk image:
# store a base image, derive a child from it, store the child as a small
# delta, export it, and check every step with qemu-img and sha256sum.
set -eu
canga=$(realpath "${1:-bin/canga}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export CANGA_HOME="$work/home"

step() { printf '\n== %s\n' "$*"; }
same() { # same WHAT GOT WANT
	[ "$2" = "$3" ] || { echo "demo: $1: canga says $2, the oracle says $3" >&2; exit 1; }
	echo "ok: $1"
}
imageid() { qemu-img convert -O raw "$1" "$1.raw" && echo "sha256:$(sha256sum "$1.raw" | cut -d' ' -f1)" && rm -f "$1.raw"; }

step "a 256 MiB ext4 disk holding real files (/usr/share/doc, /etc)"
mkdir -p tree
cp -a /usr/share/doc tree/doc 2>/dev/null || true
cp -a /etc tree/etc 2>/dev/null || true
mkfs.ext4 -q -F -d tree disk.raw 256M
"$canga" convert -c disk.raw disk.qcow2
"$canga" info disk.qcow2
"$canga" check disk.qcow2
qemu-img check -q disk.qcow2
qemu-img compare -q disk.raw disk.qcow2
echo "ok: canga convert -c wrote a qcow2 that qemu-img checks clean and calls identical"

step "canga add: the image ID is the SHA-256 of the guest-visible content"
base=$("$canga" -q add disk.qcow2 --tag demo:base --description "ext4 with docs" --os "none")
same "image ID of the base" "$base" "$(imageid disk.qcow2)"

step "derive a child: an overlay on the base, changed by qemu-io"
"$canga" overlay demo:base child.qcow2
qemu-io -f qcow2 -c "write -P 0x63 1M 4M" -c "write -z 100M 8M" child.qcow2 >/dev/null
child=$("$canga" -q add child.qcow2 --tag demo:child --description "base with 4 MiB changed")
same "image ID of the child" "$child" "$(imageid child.qcow2)"
"$canga" list
"$canga" show demo:child

step "the child's blob is a delta whose backing file is the parent's blob"
blob=$("$canga" show --json demo:child | sed -n 's/.*"blob": "sha256:\([0-9a-f]*\)".*/\1/p')
qemu-img info --backing-chain "$CANGA_HOME/default/blobs/sha256/$blob" | grep -E '^(image|backing file|disk size)'
qemu-img compare -q child.qcow2 "$CANGA_HOME/default/blobs/sha256/$blob"
echo "ok: qemu-img opens the blob in place and calls it identical to the overlay"

step "export the child as one standalone file"
"$canga" export demo:child child-flat.qcow2
qemu-img compare -q child.qcow2 child-flat.qcow2
"$canga" digest child.qcow2 child-flat.qcow2

step "canga fsck: every blob digest, image ID and chain"
"$canga" fsck
echo
echo "demo: all done"
