# Summarises the log of one `go test -fuzz` run for `make fuzz`: the last
# "fuzz: elapsed: 1m0s, execs: N (R/sec), new interesting: I (total: C)"
# line gives the executions, their rate over the whole run and the corpus
# size. Variables: t, the target; r, ok or FAIL.
function seconds(d,   s, n, u) {
	s = 0
	while (match(d, /^[0-9.]+(h|ms|m|s)/)) {
		n = substr(d, 1, RLENGTH)
		d = substr(d, RLENGTH + 1)
		u = n; gsub(/[0-9.]/, "", u); n += 0
		s += (u == "h") ? n * 3600 : (u == "m") ? n * 60 : (u == "ms") ? n / 1000 : n
	}
	return s
}
/^fuzz: elapsed:/ {
	el = $3; sub(/,$/, "", el)
	ex = $5
	corpus = $NF; sub(/\)$/, "", corpus)
}
/Failing input written to/ { crashers++ }
END {
	secs = seconds(el)
	printf "%-55s %-4s execs %10d  %7.0f/s  corpus %5s  crashers %d  (%s)\n", t, r, ex, (secs > 0 ? ex / secs : 0), corpus, crashers, el
}
