#!/bin/sh
# demo.sh [CANGA]: canga's main job end to end on a real ext4 disk image:
# store a base image, derive a child from it, store the child as a small
# delta, export it, push it to an OCI registry and pull it into a fresh
# home, and check every step with qemu-img and sha256sum.
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

step "push the child to an OCI registry (Debian's docker-registry on loopback), pull it into a fresh home"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > registry.yml <<EOF2
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
log:
  level: error
EOF2
/usr/bin/docker-registry serve registry.yml > registry.log 2>&1 &
registry=$!
trap 'kill $registry 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
ref="oci://127.0.0.1:$port/demo/ext4"
"$canga" -q push demo:base "$ref:base"
manifest=$("$canga" -q push demo:child "$ref:child")
echo "pushed demo:child as $manifest; the base was there, so only the child's blob went"
"$canga" list "$ref"
pulled=$(CANGA_HOME="$work/home2" "$canga" -q pull "$ref:child")
same "image ID pulled from the registry" "$pulled" "$child"
CANGA_HOME="$work/home2" "$canga" list
CANGA_HOME="$work/home2" "$canga" fsck
CANGA_HOME="$work/home2" "$canga" export ext4:child pulled.qcow2
qemu-img compare -q child.qcow2 pulled.qcow2
echo "ok: the image pulled into a fresh home is identical to the child"
echo
echo "demo: all done"
