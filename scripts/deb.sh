#!/bin/sh
# deb.sh VERSION ARCH BINARY SHARE OUTDIR: builds OUTDIR/canga_VERSION_ARCH.deb
# with dpkg-deb from a built static BINARY and SHARE (man/*.1 and
# completion/ as dist.sh makes them), reproducibly: every file dated
# SOURCE_DATE_EPOCH, owned by root, in sorted order.
set -eu
[ $# -eq 5 ] || { echo "usage: deb.sh VERSION ARCH BINARY SHARE OUTDIR" >&2; exit 2; }
version=$1 arch=$2 bin=$3 share=$4 out=$5
cd "$(dirname "$0")/.."
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH
umask 022

# A Debian version starts with a digit: v1.2.3 is 1.2.3, and a version
# from git describe without a tag (abc1234-dirty) is 0~abc1234-dirty.
debversion=${version#v}
case $debversion in
[0-9]*) ;;
*) debversion=0~$debversion ;;
esac

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
pkg=$root/canga
install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/share/man/man1" "$pkg/usr/share/doc/canga/docs" \
	"$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions" \
	"$pkg/usr/share/fish/vendor_completions.d"
install -m 0755 "$bin" "$pkg/usr/bin/canga"
for page in "$share"/man/*.1; do
	gzip -n -9 <"$page" >"$pkg/usr/share/man/man1/$(basename "$page").gz"
done
install -m 0644 "$share/completion/canga.bash" "$pkg/usr/share/bash-completion/completions/canga"
install -m 0644 "$share/completion/_canga" "$pkg/usr/share/zsh/vendor-completions/_canga"
install -m 0644 "$share/completion/canga.fish" "$pkg/usr/share/fish/vendor_completions.d/canga.fish"
install -m 0644 README.md "$pkg/usr/share/doc/canga/README.md"
install -m 0644 docs/*.md "$pkg/usr/share/doc/canga/docs/"

size=$(du -sk --apparent-size "$pkg/usr" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: canga
Version: $debversion
Architecture: $arch
Maintainer: canga developers <canga@cangallo.invalid>
Installed-Size: $size
Recommends: qemu-utils, libguestfs-tools
Section: admin
Priority: optional
Description: content-addressed repository of qcow2 disk images
 canga keeps qcow2 virtual-machine disk images in a content-addressed
 repository, the way Docker keeps layers, at block level: a derived image
 is stored as a compressed qcow2 delta on its parent, named by the SHA-256
 of its guest-visible content. Repositories are plain directories that any
 web server can serve; OCI registries hold images as artifacts. One static
 binary; libguestfs-tools runs Cangafile builds.
CONTROL
chmod 0644 "$pkg/DEBIAN/control"
find "$pkg" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$out/canga_${debversion}_$arch.deb" >/dev/null
