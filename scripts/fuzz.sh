#!/bin/sh
# Runs every fuzz target of PKGS (default ./...) whose name matches FUZZRUN
# (a regular expression, default every one) for FUZZTIME each and
# prints a summary line per target: executions, executions a second,
# corpus size, crashers. Logs go to bin/fuzz/. FUZZJOBS targets run at a
# time, sharing the machine's cores among their workers: on a 2-core
# machine FUZZJOBS=2 halves the wall time of a run, and roughly halves
# each target's executions. A crasher fails the run; go test writes it to
# the package's testdata/fuzz, where it stays as a seed.
set -eu
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-100x}
FUZZJOBS=${FUZZJOBS:-1}
FUZZRUN=${FUZZRUN:-.}
cd "$(dirname "$0")/.."
out=bin/fuzz
mkdir -p "$out"
rm -f "$out"/*.sum
cores=$(nproc)
workers=$((cores / FUZZJOBS))
[ "$workers" -ge 1 ] || workers=1

# One line per target: package and function.
list=$out/targets
: >"$list"
for pkg in $($GO list "${@:-./...}"); do
	for f in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz' | grep -E "$FUZZRUN" || true); do
		echo "$pkg $f" >>"$list"
	done
done

if [ ! -s "$list" ]; then
	echo "fuzz: no fuzz target matches" >&2
	exit 1
fi
n=0
while read -r pkg f; do
	n=$((n + 1))
	echo "$n $pkg $f"
done <"$list" | xargs -P "$FUZZJOBS" -L 1 sh -c '
	n=$1 pkg=$2 f=$3
	base='"$out"'/$(printf %02d "$n")-$(echo "${pkg#*/canga/}" | tr / -)-$f
	if '"$GO"' test -run "^\$" -fuzz "^$f\$" -fuzztime '"$FUZZTIME"' \
		-fuzzminimizetime '"$FUZZMINIMIZETIME"' -parallel '"$workers"' "$pkg" >"$base.log" 2>&1
	then res=ok; else res=FAIL; fi
	awk -v t="$pkg $f" -v r=$res -f scripts/fuzz-summary.awk "$base.log" >"$base.sum"
	sed "s/^/done: /" "$base.sum" >&2
' sh

echo "fuzz: $(wc -l <"$list") targets, $FUZZJOBS at a time, $workers workers each, $FUZZTIME each:"
cat "$out"/*.sum
if grep -q ' FAIL ' "$out"/*.sum; then
	echo "fuzz: failures, see $out/*.log" >&2
	exit 1
fi
