package signing

// maxSubpattern mirrors the fixed buffer of OpenSSH's match_pattern_list: a
// subpattern of 1023 bytes or more makes the whole list fail to match, so a
// file means the same thing here as it does to ssh-keygen.
const maxSubpattern = 1023

// matchPattern reports whether s matches the OpenSSH pattern p, where '*'
// matches any run of bytes and '?' exactly one byte (ssh_config(5),
// PATTERNS). OpenSSH does this by recursion, which is exponential on a
// hostile pattern such as "*a*a*a*a*b"; backtracking only to the last star
// gives the same answers in O(len(s)*len(p)).
func matchPattern(s, p string) bool {
	si, pi := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			si++
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// matchPatternList evaluates a comma-separated pattern-list the way OpenSSH's
// match_pattern_list does: 1 when a positive pattern matches and no negated
// one ("!pattern") does, -1 when a negated pattern matches, 0 otherwise.
// Patterns are evaluated in order and the first negative match wins.
func matchPatternList(s, list string) int {
	got := 0
	for i := 0; i < len(list); {
		negated := false
		if list[i] == '!' {
			negated = true
			i++
		}
		j := i
		for j < len(list) && list[j] != ',' {
			j++
		}
		sub := list[i:j]
		if len(sub) >= maxSubpattern {
			return 0
		}
		i = j
		if i < len(list) {
			i++ // the comma
		}
		if matchPattern(s, sub) {
			if negated {
				return -1
			}
			got = 1
		}
	}
	return got
}

// hasPositivePattern reports whether the pattern-list could match any name
// at all: a list of only negations or empty entries, or one that holds an
// overlong entry, can never satisfy "ssh-keygen -Y verify -I PRINCIPAL".
func hasPositivePattern(list string) bool {
	positive := false
	for i := 0; i < len(list); {
		negated := false
		if list[i] == '!' {
			negated = true
			i++
		}
		j := i
		for j < len(list) && list[j] != ',' {
			j++
		}
		sub := list[i:j]
		if len(sub) >= maxSubpattern {
			return false
		}
		if !negated && sub != "" {
			positive = true
		}
		i = j
		if i < len(list) {
			i++
		}
	}
	return positive
}
