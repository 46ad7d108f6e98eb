#!/bin/bash
# scale.sh [CANGA]: the table of issue 11 on a repository of 100,000 images
# (IMAGES), made by cmd/scalegen (internal/scalerepo): chains of depth 1
# to 20, every fifth image tagged, every fiftieth with a cangafile. Its
# blobs are real qcow2 files, 3 KiB each (512-byte clusters, 4 KiB
# virtual, one data cluster of their own), named by their SHA-256, each
# naming its parent's blob as backing file; image IDs are the SHA-256 of
# the content. So gc and fsck do on it what they do on any repository.
#
# Each command runs $RUNS times (default 3) after a warm-up and the
# median wall time is kept, with the largest peak RSS (/usr/bin/time).
# Prints a Markdown section for bench/RESULTS.md on stdout; progress goes
# to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
canga=$(realpath "${1:-$here/../bin/canga}")
runs=${RUNS:-3}
images=${IMAGES:-100000}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/canga-scale.XXXXXX)}
servers=()
cleanup() {
	for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
for t in /usr/bin/time python3 curl go; do
	command -v "$t" >/dev/null || { echo "scale: $t is missing" >&2; exit 1; }
done

echo "== scale: generating $images images" >&2
(cd "$here/.." && go build -o "$work/scalegen" ./cmd/scalegen)
gen_start=$(date +%s.%N)
"$work/scalegen" -images "$images" "$work/pub" >"$work/vars"
gen_time=$(awk -v a="$gen_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
# shellcheck disable=SC1091
. "$work/vars" # IMAGES TAGS INDEX_SIZE TAG TAG_TARGET DEEPEST DEPTH LEAF PARENT
cd "$work"
export CANGA_HOME=$work/home
mkdir -p home
port1=$((20000 + RANDOM % 20000))
port2=$((port1 + 1))
cat >home/config.yaml <<EOF
default_repo: default
repos:
  default:
    path: $work/pub
  served:
    url: http://127.0.0.1:$port1/
    path: $work/cache-serve
  python:
    url: http://127.0.0.1:$port2/
    path: $work/cache-python
EOF

# measure NAME CMD...: median wall seconds of $runs runs into T[NAME],
# median CPU seconds (user and system) into C[NAME], max RSS (KiB) into
# M[NAME]. "{i}" in CMD is the run's number (0 is the warm-up). PRE, if
# set, runs before each run, untimed.
declare -A T C M
median() { sort -n | sed -n "$(((runs + 1) / 2))p"; }
measure() {
	local name=$1
	shift
	local times=() cpus=() rss=0 i args s k u y
	for ((i = 0; i <= runs; i++)); do
		args=("${@//\{i\}/$i}")
		[[ -n ${PRE:-} ]] && eval "$PRE"
		if ! /usr/bin/time -f "%e %M %U %S" -o time.out "${args[@]}" >out.txt 2>err.txt; then
			echo "scale: $name failed: ${args[*]}" >&2
			cat err.txt >&2
			exit 1
		fi
		((i == 0)) && continue
		read -r s k u y <time.out
		times+=("$s")
		cpus+=("$(awk -v u="$u" -v y="$y" 'BEGIN { printf "%.2f", u + y }')")
		((k > rss)) && rss=$k
	done
	T[$name]=$(printf '%s\n' "${times[@]}" | median)
	C[$name]=$(printf '%s\n' "${cpus[@]}" | median)
	M[$name]=$rss
	echo "  $name: ${T[$name]} s (CPU ${C[$name]} s), $((rss / 1024)) MiB" >&2
}

echo "== remote: canga serve and python's http.server" >&2
"$canga" serve --addr 127.0.0.1:$port1 2>/dev/null &
servers+=($!)
# python's server answers 304 by Last-Modified, which must be a second
# older than the response to be trusted.
touch -d '-1 hour' pub/index.yaml
python3 -m http.server --bind 127.0.0.1 $port2 --directory pub >python.log 2>&1 &
servers+=($!)
for p in $port1 $port2; do
	for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/index.yaml" && break; sleep 0.1; done
done
"$canga" fetch served >/dev/null
"$canga" fetch python >/dev/null
measure fetch-serve "$canga" fetch served
grep -q "not modified" out.txt || { echo "scale: fetch from canga serve was not a 304" >&2; exit 1; }
before=$(grep -c 'GET /index.yaml' python.log)
measure fetch-python "$canga" fetch python
grep -q "not modified" out.txt || { echo "scale: fetch from python was not a 304" >&2; exit 1; }
after=$(grep -c 'GET /index.yaml' python.log)
requests=$(grep 'GET /index' python.log | tail -n $((after - before)) | awk '{n[$(NF-1)]++} END {for (s in n) printf "%s%d × %s", (k++ ? ", " : ""), n[s], s}')
echo "  python saw $requests for $((runs + 1)) fetches" >&2
PRE='find cache-serve/blobs/sha256 -type f -delete' measure pull "$canga" pull "served:$DEEPEST"
kill "${servers[@]}"
servers=()

echo "== local: list, show, names" >&2
measure list "$canga" list default
measure list-json "$canga" list --json default
measure show-tag "$canga" show "$TAG"
measure show-prefix "$canga" show "${DEEPEST:7:12}"

echo "== local: changes" >&2
for ((i = 0; i <= runs; i++)); do
	# A different 1 MiB image each run: real data, so the image work is
	# a real compression.
	head -c 1048576 /dev/urandom >"one-$i.raw"
done
mkdir -p empty
cat >empty.yaml <<EOF
default_repo: default
repos:
  default:
    path: $work/empty/repo
EOF
cp empty.yaml empty/config.yaml
PRE='rm -rf empty/repo' measure add-empty env CANGA_HOME="$work/empty" "$canga" add "one-{i}.raw"
measure add "$canga" add "one-{i}.raw" --tag "bench:{i}"
measure tag "$canga" tag "moved:{i}" "$TAG"
measure deltag "$canga" deltag "moved:{i}"
measure del "$canga" del "bench:{i}"
# A blob no image uses, for gc to remove.
echo "orphan" >orphan && chmod 0444 orphan
orphan_hex=$(sha256sum orphan | cut -d' ' -f1)
PRE="cp -p orphan pub/blobs/sha256/$orphan_hex" measure gc "$canga" gc
grep -q "removed 1 blobs" out.txt || { echo "scale: gc did not remove the orphan" >&2; cat out.txt >&2; exit 1; }
measure fsck-quick "$canga" fsck --quick
grep -q ", 0 faults" out.txt || { echo "scale: fsck found faults" >&2; cat out.txt >&2; exit 1; }
blobs=$(ls pub/blobs/sha256 | wc -l)

echo "== index: the canonical reader and writer against yaml.v3's node tree" >&2
(cd "$here/.." && go test -run '^$' -bench 'Parse|Decode|Marshal' -benchtime 3x -benchmem ./index/) >gobench.txt
cpu_of() { awk -v b="$1" '$1 ~ "^"b"-" { for (i = 1; i <= NF; i++) if ($i == "cpu-ms/op") print $(i-1) }' gobench.txt; }
mb_of() { awk -v b="$1" '$1 ~ "^"b"-" { for (i = 1; i <= NF; i++) if ($i == "B/op") printf "%d", $(i-1) / 1048576 }' gobench.txt; }

ok() { awk -v t="$1" -v tl="$2" -v m="$3" -v ml="$4" 'BEGIN { print ((t <= tl && m <= ml) ? "ok" : "MISSED") }'; }
row() { # NAME LABEL TIME_TARGET RSS_TARGET_MIB
	local kib=${M[$1]}
	echo "| $2 | ${T[$1]} s | ${C[$1]} s | $((kib / 1024)) MiB | ≤ $3 s, ≤ $4 MiB | $(ok "${T[$1]}" "$3" "$kib" $(($4 * 1024))) |"
}
beyond=$(awk -v a="${T[add]}" -v b="${T[add-empty]}" 'BEGIN { printf "%.2f", a - b }')
beyondcpu=$(awk -v a="${C[add]}" -v b="${C[add-empty]}" 'BEGIN { printf "%.2f", a - b }')
load=$(cut -d' ' -f1-3 /proc/loadavg)
cat <<EOF

## Scale: $IMAGES images (issue 11)

Made by \`bench/scale.sh\` (\`make bench\` runs it after the table above) on $(date -u +%Y-%m-%d), canga $("$canga" --version | head -1 | cut -d' ' -f2).
Repository made by cmd/scalegen in ${gen_time} s: $IMAGES images in chains of 1 to $DEPTH, $TAGS tags,
index.yaml of $((INDEX_SIZE / 1048576)) MiB, $blobs blobs (real qcow2, 3 KiB each). Median of $runs runs after a
warm-up, peak RSS the largest; load average at the end: $load (other work shares the machine).

The targets are wall times, which other processes stretch on a shared machine; the CPU time (user and
system, all threads) is the work canga did.

| command | wall time | CPU time | peak RSS | target | |
|---|---|---|---|---|---|
$(row list "\`list\`" 1.0 128)
$(row list-json "\`list --json\`" 1.0 128)
$(row show-tag "\`show TAG\` (name resolved by tag)" 1.0 128)
$(row show-prefix "\`show PREFIX\` (name resolved by a 12-digit prefix)" 1.0 128)
| \`add\` of a 1 MiB image: time beyond the image work (${T[add]} s here, ${T[add-empty]} s into an empty repository) | $beyond s | $beyondcpu s | $((M[add] / 1024)) MiB | ≤ 1.0 s, ≤ 128 MiB | $(ok "$beyond" 1.0 "${M[add]}" 131072) |
$(row tag "\`tag\`" 1.0 128)
$(row deltag "\`deltag\`" 1.0 128)
$(row del "\`del\` of an image and its blob" 1.0 128)
| \`fetch\` of an unchanged index from \`canga serve\`: one request, 304 (ETag) | ${T[fetch-serve]} s | ${C[fetch-serve]} s | $((M[fetch-serve] / 1024)) MiB | ≤ 0.05 s | $(ok "${T[fetch-serve]}" 0.05 0 1) |
| \`fetch\` of an unchanged index from python's http.server: one request, 304 (Last-Modified; it answered $requests to $((runs + 1)) fetches) | ${T[fetch-python]} s | ${C[fetch-python]} s | $((M[fetch-python] / 1024)) MiB | ≤ 0.05 s | $(ok "${T[fetch-python]}" 0.05 0 1) |
$(row pull "\`pull\` of a chain of $DEPTH images from a remote whose cached index has $IMAGES images" 1.0 128)
$(row gc "\`gc\` with $blobs blobs present (one to remove)" 3.0 128)
$(row fsck-quick "\`fsck --quick\` (no blob hashing) of $blobs blobs" 3.0 128)

The reader and writer of index.yaml on the index of 100,000 images (\`go test -bench ./index/\`, CPU time per
operation, garbage collection included):

| | CPU | allocated |
|---|---|---|
| \`Parse\`: the canonical reader | $(cpu_of BenchmarkParse) ms | $(mb_of BenchmarkParse) MiB |
| \`Decode\`: the canonical reader on a stream | $(cpu_of BenchmarkDecode) ms | $(mb_of BenchmarkDecode) MiB |
| \`Parse\` of the same bytes behind a comment: yaml.v3's node tree | $(cpu_of BenchmarkParseGeneral) ms | $(mb_of BenchmarkParseGeneral) MiB |
| \`Marshal\`: the canonical writer (the bytes yaml.v3 writes) | $(cpu_of BenchmarkMarshal) ms | $(mb_of BenchmarkMarshal) MiB |
EOF
