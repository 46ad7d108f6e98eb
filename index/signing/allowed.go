package signing

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

const (
	// MaxAllowedSignersSize bounds an allowed_signers file. Real files list
	// a handful of people; the bound keeps a hostile or mistaken file (a
	// disk image named by accident) from being read into memory whole.
	MaxAllowedSignersSize = 4 << 20

	// MaxLineLength bounds one line. A 16384-bit RSA key is about 2.8 KB of
	// base64 and a certificate with many principals a few KB more.
	MaxLineLength = 64 << 10
)

// Entry is one line of an allowed_signers file.
type Entry struct {
	// Line is the 1-based line number in the file.
	Line int
	// Principals is the principals pattern-list as written, with the
	// quotes that may surround it removed.
	Principals string
	// CertAuthority marks a certificate authority: Key signs user
	// certificates rather than signing indexes itself.
	CertAuthority bool
	// HasNamespaces is set when the line has a namespaces option; only
	// then does Namespaces restrict the key.
	HasNamespaces bool
	// Namespaces is the namespaces pattern-list.
	Namespaces string
	// ValidAfter and ValidBefore bound when the key is accepted; a zero
	// time is no bound.
	ValidAfter, ValidBefore time.Time
	// Key is the public key (or CA key) of the line.
	Key ssh.PublicKey
}

// AllowedSigners is a parsed allowed_signers file (ssh-keygen(1), ALLOWED
// SIGNERS). The zero value and nil both trust nobody.
type AllowedSigners struct {
	entries []Entry
}

// Entries returns a copy of the lines that name a key, in file order.
func (a *AllowedSigners) Entries() []Entry {
	if a == nil {
		return nil
	}
	return slices.Clone(a.entries)
}

// SyntaxError is a line of an allowed_signers file that ssh-keygen would
// refuse too. It matches [ErrAllowedSigners] with [errors.Is].
type SyntaxError struct {
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("signing: allowed_signers line %d: %s", e.Line, e.Msg)
}

// Is makes every SyntaxError match ErrAllowedSigners.
func (e *SyntaxError) Is(target error) bool { return target == ErrAllowedSigners }

// LoadAllowedSigners reads and parses the allowed_signers file at path.
func LoadAllowedSigners(path string) (*AllowedSigners, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	defer f.Close()
	a, err := ParseAllowedSigners(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// ParseAllowedSigners parses an allowed_signers file: one
// "principals [options] keytype base64 [comment]" per line, with blank lines
// and lines starting with '#' ignored. It follows OpenSSH's sshsig.c so that
// a file means the same thing here as to "ssh-keygen -Y verify"; the one
// difference is that every line is checked up front, where ssh-keygen only
// notices a broken line when it reaches it for a matching principal.
func ParseAllowedSigners(r io.Reader) (*AllowedSigners, error) {
	lr := &io.LimitedReader{R: r, N: MaxAllowedSignersSize + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, 4096), MaxLineLength+1)
	a := &AllowedSigners{}
	n := 0
	for sc.Scan() {
		n++
		if lr.N <= 0 {
			return nil, fmt.Errorf("%w: larger than %d bytes", ErrAllowedSigners, MaxAllowedSignersSize)
		}
		line := sc.Text()
		if len(line) > MaxLineLength {
			return nil, &SyntaxError{Line: n, Msg: fmt.Sprintf("longer than %d bytes", MaxLineLength)}
		}
		e, ok, err := parseLine(line)
		if err != nil {
			return nil, &SyntaxError{Line: n, Msg: err.Error()}
		}
		if ok {
			e.Line = n
			a.entries = append(a.entries, e)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &SyntaxError{Line: n + 1, Msg: fmt.Sprintf("longer than %d bytes", MaxLineLength)}
		}
		return nil, fmt.Errorf("signing: reading allowed_signers: %w", err)
	}
	if lr.N <= 0 {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrAllowedSigners, MaxAllowedSignersSize)
	}
	return a, nil
}

const whitespace = " \t\r\n"

// parseLine parses one line; ok is false for blank and comment lines.
func parseLine(line string) (e Entry, ok bool, err error) {
	if strings.IndexByte(line, 0) >= 0 {
		return e, false, errors.New("NUL byte")
	}
	cp := strings.TrimLeft(line, whitespace)
	if cp == "" || cp[0] == '#' {
		return e, false, nil
	}
	principals, rest, err := nextField(cp)
	if err != nil {
		return e, false, err
	}
	e.Principals = principals
	key, keyErr := readKey(rest)
	var opts string
	if keyErr != nil {
		if looksLikeKeyType(rest) {
			return e, false, keyErr
		}
		// Like sshkey_read failing in parse_principals_key_and_options:
		// what follows the principals is not a key, so it must be options.
		var after string
		opts, after, err = splitOptions(rest)
		if err != nil {
			return e, false, err
		}
		after = strings.TrimLeft(after, " \t")
		if strings.TrimRight(after, whitespace) == "" {
			return e, false, errors.New("missing key")
		}
		if key, err = readKey(after); err != nil {
			return e, false, err
		}
	}
	e.Key = key
	if err := parseOptions(opts, &e); err != nil {
		return e, false, err
	}
	return e, true, nil
}

// nextField is OpenSSH's strdelimw: a field ends at whitespace, and a double
// quote starts a quoted part that runs to the next quote, spaces included.
// A line with nothing after the principals is an error, as there is no key.
func nextField(s string) (field, rest string, err error) {
	i := strings.IndexAny(s, whitespace+`"`)
	if i < 0 {
		return "", "", errors.New("missing key")
	}
	if s[i] != '"' {
		return s[:i], strings.TrimLeft(s[i+1:], whitespace), nil
	}
	j := strings.IndexByte(s[i+1:], '"')
	if j < 0 {
		return "", "", errors.New("unterminated quote in principals")
	}
	field = s[:i] + s[i+1:i+1+j]
	return field, strings.TrimLeft(s[i+1+j+1:], whitespace), nil
}

// splitOptions is sshkey_advance_past_options: the options run to the first
// space or tab outside double quotes, where `\"` does not end a quote.
func splitOptions(s string) (opts, rest string, err error) {
	quoted := false
	i := 0
	for ; i < len(s) && (quoted || (s[i] != ' ' && s[i] != '\t')); i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] == '"' {
			i++
		} else if s[i] == '"' {
			quoted = !quoted
		}
	}
	if quoted {
		return "", "", errors.New("unterminated quote in options")
	}
	return s[:i], s[i:], nil
}

// looksLikeKeyType tells a garbled key ("ssh-ed25519 AAAA!!") from options,
// none of which start this way, so the error names the real problem.
func looksLikeKeyType(s string) bool {
	for _, p := range []string{"ssh-", "ecdsa-", "sk-", "rsa-"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// readKey reads "keytype base64 [comment]" the way sshkey_read does: the
// type name must be followed by whitespace and must name the key in the blob.
func readKey(s string) (ssh.PublicKey, error) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return nil, errors.New("invalid key: no key data after the key type")
	}
	typ := s[:i]
	s = strings.TrimLeft(s[i:], " \t")
	if j := strings.IndexAny(s, " \t"); j >= 0 {
		s = s[:j]
	}
	s = strings.TrimRight(s, "\r\n")
	blob, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("invalid key: %s: bad base64", clip(typ))
	}
	pub, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return nil, fmt.Errorf("invalid key: %s: %v", clip(typ), err)
	}
	if pub.Type() != typ {
		return nil, fmt.Errorf("invalid key: type %s does not match key data (%s)", clip(typ), pub.Type())
	}
	return pub, nil
}

// parseOptions is sshsigopt_parse: comma-separated, keywords
// case-insensitive, values double-quoted, each option at most once.
func parseOptions(opts string, e *Entry) error {
	var after, before bool
	for opts != "" {
		start := opts
		switch {
		case hasPrefixFold(opts, "cert-authority"):
			e.CertAuthority = true
			opts = opts[len("cert-authority"):]
		case hasPrefixFold(opts, "namespaces="):
			if e.HasNamespaces {
				return errors.New(`multiple "namespaces" options`)
			}
			v, rest, err := dequote(opts[len("namespaces="):])
			if err != nil {
				return fmt.Errorf("namespaces: %w", err)
			}
			e.HasNamespaces, e.Namespaces, opts = true, v, rest
		case hasPrefixFold(opts, "valid-after="):
			if after {
				return errors.New(`multiple "valid-after" options`)
			}
			t, rest, err := timeOption(opts[len("valid-after="):])
			if err != nil {
				return fmt.Errorf("valid-after: %w", err)
			}
			after, e.ValidAfter, opts = true, t, rest
		case hasPrefixFold(opts, "valid-before="):
			if before {
				return errors.New(`multiple "valid-before" options`)
			}
			t, rest, err := timeOption(opts[len("valid-before="):])
			if err != nil {
				return fmt.Errorf("valid-before: %w", err)
			}
			before, e.ValidBefore, opts = true, t, rest
		}
		if opts == "" {
			break
		}
		if opts[0] != ',' {
			name := opts
			if i := strings.IndexAny(name, ",="); i >= 0 {
				name = name[:i]
			}
			if opts == start {
				return fmt.Errorf("unknown option %q", clip(name))
			}
			return fmt.Errorf("unexpected %q after option %q", clip(name), clip(start[:len(start)-len(opts)]))
		}
		opts = opts[1:]
		if opts == "" {
			return errors.New("options end with a comma")
		}
	}
	if after && before && !e.ValidBefore.After(e.ValidAfter) {
		return errors.New("valid-before is not after valid-after")
	}
	return nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// dequote is opt_dequote: the value must be in double quotes (ssh-keygen
// refuses namespaces=file), and `\"` stands for a quote.
func dequote(s string) (v, rest string, err error) {
	if s == "" || s[0] != '"' {
		return "", "", errors.New("value must be in double quotes")
	}
	var b strings.Builder
	i := 1
	for ; i < len(s) && s[i] != '"'; i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] == '"' {
			i++
		}
		b.WriteByte(s[i])
	}
	if i >= len(s) {
		return "", "", errors.New("missing closing quote")
	}
	return b.String(), s[i+1:], nil
}

func timeOption(s string) (time.Time, string, error) {
	v, rest, err := dequote(s)
	if err != nil {
		return time.Time{}, "", err
	}
	t, err := parseTime(v)
	if err != nil {
		return time.Time{}, "", err
	}
	return t, rest, nil
}

// parseTime is OpenSSH's parse_absolute_time: YYYYMMDD, YYYYMMDDHHMM or
// YYYYMMDDHHMMSS, in UTC with a "Z" (or "UTC") suffix and in the local time
// zone without one. Out-of-range days roll over (February 30 is March 1 or
// 2) as mktime does; times at or before the Unix epoch are refused, as
// OpenSSH uses 0 for "no bound".
func parseTime(s string) (time.Time, error) {
	orig := s
	loc := time.Local
	switch l := len(s); {
	case l > 1 && (s[l-1] == 'Z' || s[l-1] == 'z'):
		loc, s = time.UTC, s[:l-1]
	case l > 3 && strings.EqualFold(s[l-3:], "UTC"):
		loc, s = time.UTC, s[:l-3]
	}
	if len(s) != 8 && len(s) != 12 && len(s) != 14 {
		return time.Time{}, fmt.Errorf("time %q: want YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]", clip(orig))
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return time.Time{}, fmt.Errorf("time %q: not all digits", clip(orig))
		}
	}
	num := func(i, n int) int { v, _ := strconv.Atoi(s[i : i+n]); return v }
	year, month, day := num(0, 4), num(4, 2), num(6, 2)
	var hour, minute, sec int
	if len(s) >= 12 {
		hour, minute = num(8, 2), num(10, 2)
	}
	if len(s) == 14 {
		sec = num(12, 2)
	}
	// The ranges strptime accepts; anything else is a typo, not a date.
	if month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || sec > 61 {
		return time.Time{}, fmt.Errorf("time %q: field out of range", orig)
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, 0, loc)
	if t.Unix() <= 0 {
		return time.Time{}, fmt.Errorf("time %q: not after 1970-01-01T00:00:00Z", orig)
	}
	return t, nil
}

// clip keeps an untrusted string from flooding an error message.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
