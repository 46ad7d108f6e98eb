#!/bin/bash
# run.sh [CANGA]: canga against qemu-img, openssl and curl on the same
# realistic input, in one run; prints ratios and writes bench/RESULTS.md.
#
# Each command runs $RUNS times (default 3) after a warm-up, with the page
# cache warm and nothing left to write back (sync), and the median wall
# time is kept. Peak memory is the largest maximum RSS of canga's runs.
#
# BEFORE=OLDCANGA also runs an earlier canga binary on every row of the
# first table, alternating with CANGA run by run, against the same
# baselines, and adds a before-and-after table: a change is judged in one
# run, not against figures of another day. RUNS then defaults to 7.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
canga=$(realpath "${1:-$here/../bin/canga}")
before=${BEFORE:+$(realpath "$BEFORE")}
# Two binaries a few percent apart need more runs than a ratio to a
# baseline several times slower.
runs=${RUNS:-$([ -n "$before" ] && echo 7 || echo 3)}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/canga-bench.XXXXXX)}
results=${RESULTS:-$here/RESULTS.md}
trap 'rm -rf "$work"' EXIT
cd "$work"

for t in qemu-img openssl mkfs.ext4 /usr/bin/time; do
	command -v "$t" >/dev/null || { echo "bench: $t is missing (scripts/deps.sh installs it)" >&2; exit 1; }
done

echo "== input: realistic ext4 disk" >&2
"$here/mkimage.sh" ext4.raw 2G
qemu-img convert -f raw -O qcow2 ext4.raw ext4.qcow2
qemu-img convert -f raw -O qcow2 -c ext4.raw ext4-zlib.qcow2
alloc=$(du -B1 ext4.raw | cut -f1)
virt=$(stat -c %s ext4.raw)

# measure NAME CMD...: median wall seconds of $runs runs into T[NAME],
# max RSS (KiB) into M[NAME]. The command's output is discarded.
declare -A T M S
measure() {
	local name=$1
	shift
	if [ -z "${warm:-}" ]; then
		"$@" >/dev/null 2>&1 || { echo "bench: $name failed: $*" >&2; "$@" >&2; exit 1; }
	fi
	local times=() rss=0 i s k
	for ((i = 0; i < runs; i++)); do
		# What the previous run left to write back must not slow this one.
		sync
		/usr/bin/time -f "%e %M" -o time.out "$@" >/dev/null 2>&1
		read -r s k <time.out
		times+=("$s")
		((k > rss)) && rss=$k
	done
	T[$name]=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")
	M[$name]=$rss
	echo "  $name: ${T[$name]} s, ${M[$name]} KiB" >&2
}
# measure_canga NAME ARGS...: measure NAME with @canga@ in ARGS replaced
# by canga; with BEFORE, also before-NAME with the earlier binary, run by
# run in turn, so that both see the same machine.
measure_canga() {
	local name=$1
	shift
	if [ -z "$before" ]; then
		measure "$name" "${@//@canga@/$canga}"
		return
	fi
	# The order alternates (ABBA) so that neither binary always runs
	# right after the other's writes; the last round runs the earlier
	# binary first, so that the output files left behind are this one's.
	local i count=$runs warm=
	local -A t
	# once KEY BINARY ARGS...: one timed run of KEY, kept in t[KEY.i]
	# (seconds) and t[KEY.mi] (KiB).
	once() {
		local key=$1 bin=$2
		shift 2
		measure "$key" "${@//@canga@/$bin}"
		t[$key.$i]=${T[$key]} t[$key.m$i]=${M[$key]}
	}
	runs=1
	for ((i = 0; i < count; i++)); do
		if (((count - 1 - i) % 2)); then
			once "$name" "$canga" "$@"
			once "before-$name" "$before" "$@"
		else
			once "before-$name" "$before" "$@"
			once "$name" "$canga" "$@"
		fi
		warm=1
	done
	runs=$count
	# of KEY [m]: the times (or, with m, the KiB) of KEY's runs.
	of() { for ((i = 0; i < count; i++)); do echo "${t[$1.${2:-}$i]}"; done; }
	median() { sort -n | sed -n "$(((count + 1) / 2))p"; }
	# spread: the interquartile range of the runs, in seconds.
	spread() { sort -n | awk -v n="$count" '{ v[NR] = $1 } END { lo = int((n + 3) / 4); hi = n + 1 - lo; printf "%.2f", v[hi] - v[lo] }'; }
	local key
	for key in "$name" "before-$name"; do
		T[$key]=$(of "$key" | median)
		S[$key]=$(of "$key" | spread)
		M[$key]=$(of "$key" m | sort -n | tail -1)
	done
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
sum() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a + b }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t ? "ok" : "MISSED") }'; }
atleast() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t ? "ok" : "MISSED") }'; }

# Two-step baselines are scripts so they are timed as one command.
cat >qemu-then-openssl.sh <<'EOF'
#!/bin/sh
qemu-img convert -O raw "$1" out.raw && openssl dgst -sha256 out.raw && rm -f out.raw
EOF
cat >canga-add.sh <<'EOF'
#!/bin/sh
# canga-add.sh CANGA ARGS...
canga=$1
shift
rm -rf home && CANGA_HOME=$PWD/home exec "$canga" -q add "$@"
EOF
chmod +x qemu-then-openssl.sh canga-add.sh

echo "== digest" >&2
measure openssl-raw openssl dgst -sha256 ext4.raw
measure_canga canga-digest-plain @canga@ -q digest ext4.qcow2
measure qemu-openssl-zlib ./qemu-then-openssl.sh ext4-zlib.qcow2
measure_canga canga-digest-zlib @canga@ -q digest ext4-zlib.qcow2

echo "== convert" >&2
measure qemu-convert-zlib qemu-img convert -f raw -O qcow2 -c -m 16 -W ext4.raw q-zlib.qcow2
measure_canga canga-convert-zlib @canga@ -q convert -f raw -c ext4.raw c-zlib.qcow2
measure qemu-convert-zstd qemu-img convert -f raw -O qcow2 -c -m 16 -W -o compression_type=zstd ext4.raw q-zstd.qcow2
measure_canga canga-convert-zstd @canga@ -q convert -f raw --compression zstd ext4.raw c-zstd.qcow2
for f in q-zlib c-zlib q-zstd c-zstd; do
	qemu-img check -q "$f.qcow2" && qemu-img compare -q ext4.raw "$f.qcow2" ||
		{ echo "bench: $f.qcow2 is not a faithful copy" >&2; exit 1; }
done
size() { stat -c %s "$1"; }
if [ -n "$before" ]; then
	"$before" -q convert -f raw -c ext4.raw before-zlib.qcow2
	"$before" -q convert -f raw --compression zstd ext4.raw before-zstd.qcow2
fi

echo "== add" >&2
measure_canga canga-add ./canga-add.sh @canga@ ext4.raw

echo "== pull over loopback" >&2
CANGA_HOME=$PWD/pub "$canga" -q add ext4.raw --tag ext4 >/dev/null
blob=$(CANGA_HOME=$PWD/pub "$canga" show --json ext4 | sed -n 's/.*"blob": "sha256:\([0-9a-f]*\)".*/\1/p')
port=$((20000 + RANDOM % 20000))
CANGA_HOME=$PWD/pub "$canga" serve --addr 127.0.0.1:$port 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for i in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/index.yaml" && break; sleep 0.1; done
cat >canga-pull.sh <<PULL
#!/bin/sh
# canga-pull.sh CANGA
rm -rf cons && mkdir cons
printf 'default_repo: default\\nrepos:\\n  default:\\n    path: %s/cons/default\\n  pub:\\n    url: http://127.0.0.1:$port/\\n    path: %s/cons/pub\\n' "\$PWD" "\$PWD" >cons/config.yaml
CANGA_HOME=\$PWD/cons "\$1" -q fetch >/dev/null && CANGA_HOME=\$PWD/cons exec "\$1" -q pull pub:ext4
PULL
chmod +x canga-pull.sh
blobsize=$(stat -c %s "pub/default/blobs/sha256/$blob")
measure curl-blob curl -sf -o curl.out "http://127.0.0.1:$port/blobs/sha256/$blob"
measure_canga canga-pull ./canga-pull.sh @canga@
kill $server

echo "== OCI registry (docker-registry on loopback)" >&2
oci_rows=$(OCI_HOME=$PWD/pub RUNS=$runs BENCH_DIR=$work "$here/oci.sh" "$canga")

r_dplain=$(ratio "${T[canga-digest-plain]}" "${T[openssl-raw]}")
r_dzlib=$(ratio "${T[canga-digest-zlib]}" "${T[qemu-openssl-zlib]}")
r_czlib=$(ratio "${T[canga-convert-zlib]}" "${T[qemu-convert-zlib]}")
s_czlib=$(ratio "$(size c-zlib.qcow2)" "$(size q-zlib.qcow2)")
r_czstd=$(ratio "${T[canga-convert-zstd]}" "${T[qemu-convert-zstd]}")
s_czstd=$(ratio "$(size c-zstd.qcow2)" "$(size q-zstd.qcow2)")
r_add=$(ratio "${T[canga-add]}" "${T[qemu-convert-zlib]}")
# Throughput ratio: curl's time over canga's.
r_pull=$(ratio "${T[curl-blob]}" "${T[canga-pull]}")
peak=0 bpeak=0
for k in "${!M[@]}"; do
	[[ $k == canga-* ]] && ((M[$k] > peak)) && peak=${M[$k]}
	[[ $k == before-* ]] && ((M[$k] > bpeak)) && bpeak=${M[$k]}
done

# before_after: the table of BEFORE against CANGA, row by row of the first
# table: each binary's median, and its ratio to the same baseline.
before_after() {
	local bv nv
	bv=$("$before" --version | head -1 | cut -d' ' -f2)
	nv=$("$canga" --version | head -1 | cut -d' ' -f2)
	[ "$bv" = dev ] && bv=$(basename "$before")
	echo "## Before and after"
	echo
	echo "The same rows, with an earlier canga ($bv) run in turn with this one ($nv), run by run"
	echo "in alternating order, in this run (\`make bench BEFORE=OLDCANGA\`): median of $runs runs each,"
	echo "and in brackets the interquartile range (IQR) of those runs. Ratios are to the baselines above;"
	echo "lower is better except for the pull, a throughput. A median slower by less than the larger"
	echo "of the two spreads is reported as within the spread, not as a change."
	echo
	echo "| measurement | before | now | before ratio | now ratio | |"
	echo "|---|---|---|---|---|---|"
	# judge NOW BEFORE higher|lower: is NOW as good as BEFORE, when
	# higher (or lower) is better?
	judge() {
		awk -v n="$1" -v b="$2" -v dir="$3" 'BEGIN { print ((dir == "lower" ? n <= b : n >= b) ? "as good or better" : "WORSE") }'
	}
	# judge_time NAME: this binary's median time against the earlier
	# one's. A slower median by less than the runs' spread (the larger
	# interquartile range of the two) is within the noise, and said so.
	judge_time() {
		awk -v n="${T[$1]}" -v b="${T[before-$1]}" -v sn="${S[$1]}" -v sb="${S[before-$1]}" 'BEGIN {
			s = (sn > sb ? sn : sb)
			if (n <= b) print "as good or better"
			else if (n - b <= s) printf "same within the spread (%.2f s slower, spread %.2f s)\n", n - b, s
			else print "WORSE"
		}'
	}
	row() { # row TEXT NAME BASELINE-NAME time|throughput
		local rb rn
		rb=$(ratio "${T[before-$2]}" "${T[$3]}")
		rn=$(ratio "${T[$2]}" "${T[$3]}")
		if [ "$4" = throughput ]; then
			rb=$(ratio "${T[$3]}" "${T[before-$2]}")
			rn=$(ratio "${T[$3]}" "${T[$2]}")
		fi
		echo "| $1 | ${T[before-$2]} s (IQR ${S[before-$2]}) | ${T[$2]} s (IQR ${S[$2]}) | $rb | $rn | $(judge_time "$2") |"
	}
	sizerow() { # sizerow TEXT BEFORE-FILE NOW-FILE QEMU-FILE
		local rb rn
		rb=$(ratio "$(size "$2")" "$(size "$4")")
		rn=$(ratio "$(size "$3")" "$(size "$4")")
		echo "| $1 | $(size "$2") B | $(size "$3") B | $rb | $rn | $(judge "$rn" "$rb" lower) |"
	}
	row "digest, uncompressed" canga-digest-plain openssl-raw time
	row "digest, zlib" canga-digest-zlib qemu-openssl-zlib time
	row "\`convert -c\` (zlib): time" canga-convert-zlib qemu-convert-zlib time
	sizerow "\`convert -c\` (zlib): output size" before-zlib.qcow2 c-zlib.qcow2 q-zlib.qcow2
	row "\`convert --compression zstd\`: time" canga-convert-zstd qemu-convert-zstd time
	sizerow "\`convert --compression zstd\`: output size" before-zstd.qcow2 c-zstd.qcow2 q-zstd.qcow2
	row "\`add\`" canga-add qemu-convert-zlib time
	row "\`pull\` from \`canga serve\` (throughput: curl's time over canga's)" canga-pull curl-blob throughput
	echo "| peak memory of any run above | $((bpeak / 1024)) MiB | $((peak / 1024)) MiB | | | $(judge "$peak" "$bpeak" lower) |"
}

# inflate_section FILE: the section of RESULTS.md on the deflate decoder,
# from the output of `go test -bench BenchmarkInflateClusters -count N`:
# medians of MB/s (wall clock) and cpu-MB/s (CPU time of the decoding
# thread) for canga's decoder and klauspost/compress/flate's.
inflate_section() {
	med() { # med NAME FIELD: median of the value before unit FIELD on NAME's lines
		awk -v name="/$1-" -v unit="$2" 'index($1, name) { for (i = 2; i <= NF; i++) if ($i == unit) print $(i - 1) }' "$3" |
			sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.1f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
	}
	local cw kw cc kc runs
	cw=$(med canga MB/s "$1")
	kw=$(med klauspost MB/s "$1")
	cc=$(med canga cpu-MB/s "$1")
	kc=$(med klauspost cpu-MB/s "$1")
	runs=$(grep -c '/canga-' "$1")
	echo "## Inflate: canga's decoder vs klauspost/compress/flate"
	echo
	echo "Every compressed cluster of the disk above, as \`qemu-img convert -c\` writes it (64 KiB zlib"
	echo "clusters), decoded one by one into a cluster buffer: canga's inflateCluster against a pooled"
	echo "klauspost/compress/flate reader, reset for each cluster and read for exactly one cluster."
	echo "Median of $runs runs of \`go test -run '^\$' -bench '^BenchmarkInflateClusters\$' -count $runs ./qcow2/\`;"
	echo "cpu-MB/s counts the CPU time of the decoding thread only, which other load disturbs less."
	echo
	echo "| decoder | MB/s | cpu-MB/s |"
	echo "|---|---|---|"
	echo "| canga (qcow2/inflate.go) | $cw | $cc |"
	echo "| klauspost/compress/flate, pooled | $kw | $kc |"
	echo "| ratio (speed-up target >= 1.5) | $(ratio "$cw" "$kw") $(atleast "$(ratio "$cw" "$kw")" 1.5) | $(ratio "$cc" "$kc") $(atleast "$(ratio "$cc" "$kc")" 1.5) |"
	echo
	echo "canga keeps its decoder only while it is at least 1.5 times as fast. It also accepts and"
	echo "refuses exactly what qemu's zlib does (qcow2/inflate.go; FuzzInflate holds it to zlib),"
	echo "which a streaming decoder used as a black box does not."
}

table=$(
	cat <<EOF
| measurement | canga | baseline | ratio | target | |
|---|---|---|---|---|---|
| digest, uncompressed qcow2 vs \`openssl dgst -sha256\` of the raw bytes | ${T[canga-digest-plain]} s | ${T[openssl-raw]} s | $r_dplain | <= 1.1 | $(verdict "$r_dplain" 1.1) |
| digest, zlib qcow2 vs \`qemu-img convert -O raw\` + openssl | ${T[canga-digest-zlib]} s | ${T[qemu-openssl-zlib]} s | $r_dzlib | <= 0.5 | $(verdict "$r_dzlib" 0.5) |
| \`convert -c\` (zlib) vs \`qemu-img convert -c -m 16 -W\`: time | ${T[canga-convert-zlib]} s | ${T[qemu-convert-zlib]} s | $r_czlib | <= 0.5 | $(verdict "$r_czlib" 0.5) |
| \`convert -c\` (zlib): output size | $(size c-zlib.qcow2) B | $(size q-zlib.qcow2) B | $s_czlib | <= 1.01 | $(verdict "$s_czlib" 1.01) |
| \`convert --compression zstd\` vs qemu-img zstd: time | ${T[canga-convert-zstd]} s | ${T[qemu-convert-zstd]} s | $r_czstd | <= 0.8 | $(verdict "$r_czstd" 0.8) |
| \`convert --compression zstd\`: output size | $(size c-zstd.qcow2) B | $(size q-zstd.qcow2) B | $s_czstd | <= 1.0 | $(verdict "$s_czstd" 1.0) |
| \`add\` (raw input, image ID + zlib blob) vs \`qemu-img convert -c -m 16 -W\` | ${T[canga-add]} s | ${T[qemu-convert-zlib]} s | $r_add | <= 0.6 | $(verdict "$r_add" 0.6) |
| \`pull\` of a $((blobsize >> 20)) MiB blob from \`canga serve\`, verified, vs \`curl -o\`: throughput | ${T[canga-pull]} s | ${T[curl-blob]} s | $r_pull | >= 0.8 | $(atleast "$r_pull" 0.8) |
| peak memory of any canga run above | $((peak / 1024)) MiB | | | < 128 MiB | $(verdict "$peak" 131072) |
$oci_rows
EOF
)
echo
echo "$table"
[ -z "$before" ] || { echo; before_after; }

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
{
	echo "# Benchmark results"
	echo
	echo "Made by \`make bench\` (bench/run.sh) on $(date -u +%Y-%m-%d): median of $runs runs, warm page cache."
	echo
	echo "Machine: $cpu, $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, Linux $(uname -r);"
	echo "$(qemu-img --version | head -1), $(openssl version), $(go version 2>/dev/null | cut -d' ' -f3), canga $("$canga" --version | head -1 | cut -d' ' -f2)."
	echo
	echo "Input: bench/mkimage.sh, an ext4 file system made by \`mkfs.ext4 -d\` from a Debian"
	echo "minbase tree (debootstrap) plus the Go toolchain: $((virt >> 20)) MiB virtual, $((alloc >> 20)) MiB allocated."
	echo
	echo "$table"
	if [ -n "$before" ]; then
		echo
		before_after
	fi
	if [ -n "${INFLATE_BENCH:-}" ] && [ -s "$INFLATE_BENCH" ]; then
		echo
		inflate_section "$INFLATE_BENCH"
	fi
} >"$results"
"$here/scale.sh" "$canga" >>"$results"
echo "== lazy access (canga nbd, guestfish)" >&2
BENCH_DIR=$work "$here/lazy.sh" "$canga" ext4.raw >>"$results"
echo "bench: wrote $results" >&2
