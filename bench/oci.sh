#!/bin/bash
# oci.sh CANGA: canga's registry commands (SPEC §8) against curl speaking the
# same distribution API to the same registry, in one run. It prints markdown
# table rows in the columns of run.sh's table (measurement | canga | baseline
# | ratio | target | verdict) on stdout, and its progress on stderr.
#
# The registry is Debian's docker-registry (CNCF distribution 2.8), plain
# HTTP on a free loopback port, filesystem storage in a temporary root.
# Measured:
#   1. push throughput of the bench disk's blob vs curl's two-step upload
#      (POST /v2/NAME/blobs/uploads/, then PUT LOCATION&digest=D -T FILE);
#   2. pull throughput (blob digests checked while streaming, into a
#      repository; image IDs not hashed: pull --verify-ids does that) vs curl -L -o of
#      /v2/NAME/blobs/D;
#   3. peak RSS of push and pull of a 4 GiB blob (random, uncompressed);
#   4. bytes sent by the push of a child whose parent is in the registry
#      repository already, beyond the child's blob: request bodies counted
#      by a small proxy in front of the registry.
#
# Environment: RUNS (default 3) runs per timing, median kept, after a
# warm-up; OCI_HOME, a canga home whose image tagged ext4 is the bench disk
# (run.sh's publisher), to skip building it; BENCH_DIR, the work directory
# (removed at the end; default a new one under /var/tmp).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
canga=$(realpath "${1:?usage: oci.sh CANGA}")
runs=${RUNS:-3}
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/canga-oci.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

for t in docker-registry qemu-img openssl curl python3 mkfs.ext4 /usr/bin/time; do
	command -v "$t" >/dev/null || { echo "oci.sh: $t is missing" >&2; exit 1; }
done
# Credentials come from Docker's config.json: none here, and never the user's.
export DOCKER_CONFIG=$work/docker
mkdir -p "$DOCKER_CONFIG"

freeport() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
waitfor() {
	local i
	for i in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
	echo "oci.sh: nothing answers $1" >&2
	exit 1
}

# ---- the registry ----
port=$(freeport)
mkdir storage
cat >registry.yml <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
  delete:
    enabled: false
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: canga-bench
EOF
docker-registry serve registry.yml >registry.log 2>&1 &
pids+=($!)
host=127.0.0.1:$port
url=http://$host
waitfor "$url/v2/"

# ---- the input: the bench disk, in a canga home ----
if [ -n "${OCI_HOME:-}" ]; then
	src=$(realpath "$OCI_HOME")
else
	echo "== input: realistic ext4 disk" >&2
	"$here/mkimage.sh" ext4.raw 2G >&2
	src=$work/src
	CANGA_HOME=$src "$canga" -q add ext4.raw --tag ext4 >/dev/null
fi
blob_of() { CANGA_HOME=$1 "$canga" show --json "$2" | sed -n 's/.*"blob": "sha256:\([0-9a-f]*\)".*/\1/p'; }
blob=$(blob_of "$src" ext4)
[ -n "$blob" ] || { echo "oci.sh: no image tagged ext4 in $src" >&2; exit 1; }
blobfile=$(find "$src" -path "*/blobs/sha256/$blob" -print -quit)
[ -n "$blobfile" ] || { echo "oci.sh: blob $blob not found under $src" >&2; exit 1; }
blobsize=$(stat -c %s "$blobfile")

# measure NAME CMD...: median wall seconds of $runs runs into T[NAME], max
# RSS (KiB) into M[NAME], as run.sh does.
declare -A T M
measure() {
	local name=$1
	shift
	"$@" >/dev/null 2>&1 || { echo "oci.sh: $name failed: $*" >&2; "$@" >&2; exit 1; }
	local times=() rss=0 i s k
	for ((i = 0; i < runs; i++)); do
		/usr/bin/time -f "%e %M" -o time.out "$@" >/dev/null 2>&1
		read -r s k <time.out
		times+=("$s")
		((k > rss)) && rss=$k
	done
	T[$name]=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")
	M[$name]=$rss
	echo "  $name: ${T[$name]} s, ${M[$name]} KiB" >&2
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t ? "ok" : "MISSED") }'; }
atleast() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t ? "ok" : "MISSED") }'; }

# Every push goes to a repository of its own, so that the registry has
# nothing to skip or mount: a counter picks the name.
echo 0 >counter
cat >canga-push.sh <<EOF
#!/bin/sh
n=\$((\$(cat counter) + 1)); echo \$n >counter
CANGA_HOME=\$2 exec "$canga" -q push "\$3" "oci://$host/\$1\$n/img:x"
EOF
cat >curl-push.sh <<EOF
#!/bin/sh
# curl-push.sh NAME FILE DIGEST: the two-step upload of the distribution API.
set -e
n=\$((\$(cat counter) + 1)); echo \$n >counter
loc=\$(curl -sSf -X POST -D - -o /dev/null "$url/v2/\$1\$n/img/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case \$loc in /*) loc=$url\$loc ;; esac
case \$loc in *\?*) loc="\$loc&digest=\$3" ;; *) loc="\$loc?digest=\$3" ;; esac
exec curl -sSf -X PUT -H 'Content-Type: application/octet-stream' -T "\$2" -o /dev/null "\$loc"
EOF
cat >canga-pull.sh <<EOF
#!/bin/sh
# canga-pull.sh HOME REF: a pull into an empty repository.
rm -rf "\$1" && CANGA_HOME=\$1 exec "$canga" -q pull "\$2"
EOF
chmod +x canga-push.sh curl-push.sh canga-pull.sh

echo "== push and pull of the bench blob ($((blobsize >> 20)) MiB)" >&2
measure curl-push ./curl-push.sh curl "$blobfile" "sha256:$blob"
measure canga-push ./canga-push.sh push "$src" ext4
CANGA_HOME=$src "$canga" -q push ext4 "oci://$host/bench/ext4:x" >/dev/null
measure curl-pull curl -sSfL -o curl.out "$url/v2/bench/ext4/blobs/sha256:$blob"
cmp -s curl.out "$blobfile" || { echo "oci.sh: curl's download differs from the blob" >&2; exit 1; }
rm -f curl.out
measure canga-pull ./canga-pull.sh "$work/cons" "oci://$host/bench/ext4:x"
[ "$(blob_of "$work/cons" ext4:x)" = "$blob" ] || { echo "oci.sh: the pulled image is not the pushed one" >&2; exit 1; }
rm -rf "$work/cons"

# ---- 4 GiB: peak memory ----
echo "== 4 GiB blob" >&2
big=$work/big
# AES-CTR of zeros: incompressible, at GB/s. head closes the pipe, so
# openssl dies of SIGPIPE, which is no failure here.
random() { (openssl enc -aes-128-ctr -nosalt -pass "pass:$1" </dev/zero 2>/dev/null || true) | head -c "$2"; }
random canga-bench 4G >big.raw
CANGA_HOME=$big "$canga" -q add big.raw --compression none --tag big >/dev/null
rm -f big.raw
bigblob=$(blob_of "$big" big)
bigsize=$(stat -c %s "$(find "$big" -path "*/blobs/sha256/$bigblob" -print -quit)")
# env execs canga: time measures canga itself.
/usr/bin/time -f %M -o rss.push env CANGA_HOME="$big" "$canga" -q push big "oci://$host/big/img:x" >/dev/null 2>push.err ||
	{ echo "oci.sh: push of the 4 GiB image failed" >&2; cat push.err >&2; exit 1; }
rss_push=$(tail -1 rss.push)
/usr/bin/time -f %M -o rss.pull env CANGA_HOME="$work/bigcons" "$canga" -q pull "oci://$host/big/img:x" >/dev/null 2>pull.err ||
	{ echo "oci.sh: pull of the 4 GiB image failed" >&2; cat pull.err >&2; exit 1; }
rss_pull=$(tail -1 rss.pull)
rm -rf "$work/bigcons" "$big"
echo "  push: $rss_push KiB, pull: $rss_pull KiB" >&2

# ---- a child over its parent: what push sends ----
echo "== child over its parent" >&2
cat >proxy.py <<'EOF'
# proxy.py PORT UPSTREAM LOG: an HTTP/1.1 proxy that passes every request
# on to UPSTREAM (host:port) unchanged (Host included, so that the
# registry's Location headers name the proxy) and appends
# "METHOD PATH BODY_BYTES" per request to LOG.
import http.client, http.server, socketserver, sys

port, upstream, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def relay(self):
        data = self.body()
        with open(log, "a") as f:
            f.write("%s %s %d\n" % (self.command, self.path, len(data)))
        conn = http.client.HTTPConnection(upstream, timeout=600)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        headers["Content-Length"] = str(len(data))
        conn.request(self.command, self.path, body=data, headers=headers)
        resp = conn.getresponse()
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        payload = None
        if self.command != "HEAD" and length is None:
            payload = resp.read()
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            if payload is not None:
                self.wfile.write(payload)
            else:
                left = int(length)
                while left > 0:
                    chunk = resp.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
        conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = relay

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

Server(("127.0.0.1", port), Handler).serve_forever()
EOF
pport=$(freeport)
python3 proxy.py "$pport" "$host" proxy.log 2>proxy.err &
pids+=($!)
waitfor "http://127.0.0.1:$pport/v2/"
# The child: the bench disk with 16 MiB of new random data, added as a
# delta over the parent, which the kid home pulls from the registry.
kid=$work/kid
CANGA_HOME=$kid "$canga" -q pull "oci://$host/bench/ext4:x" >/dev/null
if [ -e ext4.raw ]; then
	cp --sparse=always ext4.raw child.raw
else
	CANGA_HOME=$kid "$canga" -q export ext4:x child.raw -O raw
fi
random canga-child 16M | dd of=child.raw bs=1M seek=512 conv=notrunc status=none
CANGA_HOME=$kid "$canga" -q add child.raw --parent ext4:x --tag child >/dev/null
rm -f child.raw
childblob=$(blob_of "$kid" child)
childsize=$(stat -c %s "$kid/default/blobs/sha256/$childblob")
: >proxy.log
# --plain-http: python's server answers a TLS hello with no HTTP status
# line, so canga's loopback probe cannot tell that it is plain HTTP.
CANGA_HOME=$kid "$canga" -q push child "oci://127.0.0.1:$pport/bench/ext4:child" --plain-http >/dev/null
sent=$(awk '$1 == "PUT" || $1 == "PATCH" || $1 == "POST" { s += $3 } END { print s + 0 }' proxy.log)
extra=$((sent - childsize))
echo "  sent $sent bytes for a $childsize-byte child blob:" >&2
sed 's/^/    /' proxy.log >&2

r_push=$(ratio "${T[curl-push]}" "${T[canga-push]}")
r_pull=$(ratio "${T[curl-pull]}" "${T[canga-pull]}")
mib=$((blobsize >> 20))
cat <<EOF
| \`push\` of a $mib MiB blob to a local registry (distribution 2.8) vs curl's POST + PUT upload: throughput | ${T[canga-push]} s | ${T[curl-push]} s | $r_push | >= 0.9 | $(atleast "$r_push" 0.9) |
| \`pull oci://\` of a $mib MiB blob (digest checked while it streams) vs \`curl -L -o\` of the blob: throughput | ${T[canga-pull]} s | ${T[curl-pull]} s | $r_pull | >= 0.9 | $(atleast "$r_pull" 0.9) |
| peak memory of \`push\` of a $((bigsize >> 20)) MiB blob | $((rss_push / 1024)) MiB | | | < 128 MiB | $(verdict "$rss_push" 131071) |
| peak memory of \`pull oci://\` of a $((bigsize >> 20)) MiB blob | $((rss_pull / 1024)) MiB | | | < 128 MiB | $(verdict "$rss_pull" 131071) |
| bytes \`push\` sends beyond the blob, for a child ($((childsize >> 10)) KiB blob) whose parent is in the registry | $extra B | | | < 64 KiB | $(verdict "$extra" 65535) |
EOF
