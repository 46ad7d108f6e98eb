#!/bin/sh
# dist.sh VERSION OUTDIR [KEY]: a release of canga in OUTDIR (ARCHES, default
# "amd64 arm64", says for which; DEB_ONLY=1 makes only the .deb files):
#   canga-VERSION-linux-ARCH.tar.gz   for amd64 and arm64: the static binary,
#                                     README, docs, man pages, completions
#   canga_VERSION_ARCH.deb            the same as a Debian package (deb.sh)
#   SHA256SUMS                        of all of them
#   SHA256SUMS.sig                    with KEY: ssh-keygen -Y sign, namespace
#                                     canga-release
# The artifacts are reproducible: the same commit, VERSION and Go give the
# same bytes (static, -trimpath, no build ID, no VCS stamp, every file
# dated SOURCE_DATE_EPOCH, default: the commit's time, owned by 0:0).
set -eu
[ $# -ge 2 ] || { echo "usage: dist.sh VERSION OUTDIR [KEY]" >&2; exit 2; }
version=$1 out=$2 key=${3:-}
cd "$(dirname "$0")/.."
top=$PWD
GO=${GO:-go}
ARCHES=${ARCHES:-amd64 arm64}
commit=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
# Files made here get their modes from chmod below, never from the umask.
umask 022

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build() { # build GOARCH OUTPUT
	CGO_ENABLED=0 GOOS=linux GOARCH=$1 "$GO" build -trimpath -buildvcs=false \
		-ldflags "-s -w -buildid= -X main.version=$version -X main.commit=$commit" \
		-o "$2" ./cmd/canga
}

# Pages and completions come from the command model, the same for every
# architecture: made once, by a canga that runs here.
build "$("$GO" env GOARCH)" "$work/canga-host"
mkdir -p "$work/share/man" "$work/share/completion"
"$work/canga-host" __man "$work/share/man"
"$work/canga-host" completion bash >"$work/share/completion/canga.bash"
"$work/canga-host" completion zsh >"$work/share/completion/_canga"
"$work/canga-host" completion fish >"$work/share/completion/canga.fish"

# pack DIR TARBALL: a tarball that depends only on DIR's names and bytes.
pack() {
	find "$1" -type d -exec chmod 0755 {} +
	find "$1" -type f -exec chmod 0644 {} +
	[ ! -e "$1/canga" ] || chmod 0755 "$1/canga"
	tar --format=gnu --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
		-C "$(dirname "$1")" -cf - "$(basename "$1")" | gzip -n -9 >"$2"
}

for arch in $ARCHES; do
	name=canga-$version-linux-$arch
	d=$work/$name
	mkdir -p "$d/man/man1" "$d/completion" "$d/docs"
	build "$arch" "$d/canga"
	cp README.md "$d/"
	cp docs/*.md "$d/docs/"
	cp "$work"/share/man/*.1 "$d/man/man1/"
	cp "$work"/share/completion/* "$d/completion/"
	[ -n "${DEB_ONLY:-}" ] || pack "$d" "$out/$name.tar.gz"
	"$top/scripts/deb.sh" "$version" "$arch" "$d/canga" "$work/share" "$out"
done

[ -z "${DEB_ONLY:-}" ] || exit 0
cd "$out"
# shellcheck disable=SC2035 # the names are ours
sha256sum *.tar.gz *.deb >SHA256SUMS
if [ -n "$key" ]; then
	rm -f SHA256SUMS.sig
	ssh-keygen -q -Y sign -f "$key" -n canga-release SHA256SUMS
fi
ls -l "$out" >&2
