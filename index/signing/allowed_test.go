package signing

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
	"golang.org/x/crypto/ssh"
)

// testKeys are made in Go: parsing needs keys, not ssh-keygen's time.
func testKeys(t testing.TB) (ed, ec string) {
	t.Helper()
	edKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	edPub, err := ssh.NewPublicKey(edKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPub, err := ssh.NewPublicKey(ecKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(edPub))), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ecPub)))
}

func utc(y int, m time.Month, d, h, min, s int) time.Time {
	return time.Date(y, m, d, h, min, s, 0, time.UTC)
}

func TestParseAllowedSigners(t *testing.T) {
	ed, ec := testKeys(t)
	edB64 := strings.Fields(ed)[1]
	ecB64 := strings.Fields(ec)[1]

	good := []struct {
		name string
		line string
		id   string // a principal the line matches, to ask ssh-keygen
		want Entry
	}{
		{"plain", "alice " + ed, "alice", Entry{Principals: "alice"}},
		{"comment after key", "alice " + ed + ` Alice "the signer" Smith`, "alice", Entry{Principals: "alice"}},
		{"ecdsa", "alice,bob@example.com " + ec, "bob@example.com", Entry{Principals: "alice,bob@example.com"}},
		{"tabs and indent", " \t alice\t\t" + strings.Replace(ed, " ", "\t", 1), "alice", Entry{Principals: "alice"}},
		{"CRLF", "alice " + ed + "\r", "alice", Entry{Principals: "alice"}},
		{"quoted principals", `"alice smith,bob" ` + ed, "alice smith", Entry{Principals: "alice smith,bob"}},
		{"quoted then space", `"alice"   ` + ed, "alice", Entry{Principals: "alice"}},
		{"cert-authority", "*@example.com cert-authority " + ed, "x@example.com", Entry{Principals: "*@example.com", CertAuthority: true}},
		{"namespaces", `alice namespaces="canga-index,file" ` + ed, "alice", Entry{Principals: "alice", HasNamespaces: true, Namespaces: "canga-index,file"}},
		{"namespaces escaped quote", `alice namespaces="a\"b,canga-*" ` + ed, "alice", Entry{Principals: "alice", HasNamespaces: true, Namespaces: `a"b,canga-*`}},
		{"namespaces with space", `alice namespaces="a b" ` + ed, "alice", Entry{Principals: "alice", HasNamespaces: true, Namespaces: "a b"}},
		{"namespaces empty", `alice namespaces="" ` + ed, "alice", Entry{Principals: "alice", HasNamespaces: true}},
		{"all options mixed case", `alice Cert-Authority,NAMESPACES="x",Valid-After="20240101Z",VALID-BEFORE="20250101123456Z" ` + ed, "alice",
			Entry{Principals: "alice", CertAuthority: true, HasNamespaces: true, Namespaces: "x", ValidAfter: utc(2024, 1, 1, 0, 0, 0), ValidBefore: utc(2025, 1, 1, 12, 34, 56)}},
		{"valid-after minutes", `alice valid-after="202401011230Z" ` + ed, "alice", Entry{Principals: "alice", ValidAfter: utc(2024, 1, 1, 12, 30, 0)}},
		{"valid-after UTC suffix", `alice valid-after="20240101utc" ` + ed, "alice", Entry{Principals: "alice", ValidAfter: utc(2024, 1, 1, 0, 0, 0)}},
		{"valid-after local", `alice valid-after="20240101" ` + ed, "alice", Entry{Principals: "alice", ValidAfter: time.Date(2024, 1, 1, 0, 0, 0, 0, time.Local)}},
		{"February 30 rolls over", `alice valid-before="20230230Z" ` + ed, "alice", Entry{Principals: "alice", ValidBefore: utc(2023, 3, 2, 0, 0, 0)}},
		{"leading empty option", `alice ,namespaces="x" ` + ed, "alice", Entry{Principals: "alice", HasNamespaces: true, Namespaces: "x"}},
		{"negations", "*,!mallory " + ed, "alice", Entry{Principals: "*,!mallory"}},
	}
	for _, c := range good {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a, err := ParseAllowedSigners(strings.NewReader(c.line + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			es := a.Entries()
			if len(es) != 1 {
				t.Fatalf("%d entries, want 1", len(es))
			}
			got := es[0]
			if got.Line != 1 || got.Key == nil {
				t.Errorf("line %d key %v", got.Line, got.Key)
			}
			got.Line, got.Key = 0, nil
			if !got.ValidAfter.Equal(c.want.ValidAfter) || !got.ValidBefore.Equal(c.want.ValidBefore) {
				t.Errorf("validity %v..%v, want %v..%v", got.ValidAfter, got.ValidBefore, c.want.ValidAfter, c.want.ValidBefore)
			}
			got.ValidAfter, got.ValidBefore, c.want.ValidAfter, c.want.ValidBefore = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if got != c.want {
				t.Errorf("got %+v\nwant %+v", got, c.want)
			}
			if out, ok := keygenParses(t, c.line, c.id); !ok {
				t.Errorf("ssh-keygen refuses the line:\n%s", out)
			}
		})
	}

	bad := []struct {
		name string
		line string
		id   string
		want string // in the error
	}{
		{"principals only", "alice", "alice", "missing key"},
		{"principals and space", "alice ", "alice", "missing key"},
		{"key type only", "alice ssh-ed25519", "alice", "invalid key"},
		{"bad base64", "alice ssh-ed25519 AAAA!!", "alice", "invalid key"},
		{"truncated key", "alice ssh-ed25519 " + edB64[:20], "alice", "invalid key"},
		{"type mismatch", "alice ssh-ed25519 " + ecB64, "alice", "does not match"},
		{"unknown key type", "alice ssh-foo " + edB64, "alice", "invalid key"},
		{"unterminated quoted principal", `"alice ` + ed, "alice", "unterminated quote"},
		{"text after quoted principal", `ali"ce sm"ith ` + ed, "alice sm", "unknown option"},
		{"unquoted value", `alice namespaces=file ` + ed, "alice", "double quotes"},
		{"unterminated option quote", `alice namespaces="file ` + ed, "alice", "unterminated quote"},
		{"unknown option", `alice no-touch-required ` + ed, "alice", `unknown option "no-touch-required"`},
		{"option prefix", `alice cert-authorityx ` + ed, "alice", `unexpected "x" after option "cert-authority"`},
		{"junk after value", `alice namespaces="x"junk ` + ed, "alice", `unexpected "junk" after option`},
		{"trailing comma", `alice namespaces="x", ` + ed, "alice", "comma"},
		{"duplicate namespaces", `alice namespaces="a",namespaces="b" ` + ed, "alice", "multiple"},
		{"duplicate valid-after", `alice valid-after="20240101Z",valid-after="20240102Z" ` + ed, "alice", "multiple"},
		{"options without key", `alice namespaces="x"`, "alice", "missing key"},
		{"short time", `alice valid-after="2024" ` + ed, "alice", "YYYYMMDD"},
		{"ten digit time", `alice valid-after="2024010112" ` + ed, "alice", "YYYYMMDD"},
		{"letters in time", `alice valid-after="2024O101" ` + ed, "alice", "digits"},
		{"month 13", `alice valid-after="20241301Z" ` + ed, "alice", `"20241301Z": field out of range`},
		{"hour 24", `alice valid-after="202401012400Z" ` + ed, "alice", "range"},
		{"epoch", `alice valid-after="19700101Z" ` + ed, "alice", "1970"},
		{"window reversed", `alice valid-after="20250101Z",valid-before="20240101Z" ` + ed, "alice", "not after"},
		{"window empty", `alice valid-after="20240101Z",valid-before="20240101Z" ` + ed, "alice", "not after"},
		{"unquoted time", `alice valid-before=20240101Z ` + ed, "alice", "double quotes"},
	}
	for _, c := range bad {
		t.Run("bad/"+c.name, func(t *testing.T) {
			t.Parallel()
			// The bad line comes third, after a comment and a good line.
			text := "# team\nbob " + ed + "\n" + c.line + "\n"
			_, err := ParseAllowedSigners(strings.NewReader(text))
			t.Logf("ParseAllowedSigners: %v", err)
			var se *SyntaxError
			if !errors.As(err, &se) || se.Line != 3 || !errors.Is(err, ErrAllowedSigners) {
				t.Fatalf("error %v, want a SyntaxError on line 3", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if out, ok := keygenParses(t, c.line, c.id); ok {
				t.Errorf("ssh-keygen accepts the line:\n%s", out)
			}
		})
	}
}

// keygenParses asks ssh-keygen whether it accepts line, by looking the
// line up for principal id (ssh-keygen parses only lines that match).
func keygenParses(t testing.TB, line, id string) (string, bool) {
	t.Helper()
	as := testkit.WriteFile(t, filepath.Join(t.TempDir(), "allowed_signers"), []byte(line+"\n"), 0o600)
	out, code, stderr := testkit.RunCode(t, "ssh-keygen", "-Y", "match-principals", "-I", id, "-f", as)
	return out + stderr, code == 0
}

func TestParseAllowedSignersBlankAndComments(t *testing.T) {
	ed, ec := testKeys(t)
	text := "\n# comment\n   # indented comment\n\t\n\r\nalice " + ed + "\n\n#bob " + ec + "\ncarol " + ec
	a := mustParse(t, text)
	es := a.Entries()
	if len(es) != 2 || es[0].Line != 6 || es[0].Principals != "alice" || es[1].Line != 9 || es[1].Principals != "carol" {
		t.Fatalf("entries %+v", es)
	}
	// Entries is a copy: changing it does not change the signers.
	es[0].Principals = "mallory"
	if a.Entries()[0].Principals != "alice" {
		t.Error("Entries shares its slice")
	}
	var nilSigners *AllowedSigners
	if nilSigners.Entries() != nil {
		t.Error("nil AllowedSigners has entries")
	}
	if len(mustParse(t, "").Entries()) != 0 {
		t.Error("empty file has entries")
	}
}

func TestParseAllowedSignersLimits(t *testing.T) {
	ed, _ := testKeys(t)
	long := "alice " + ed + " " + strings.Repeat("c", MaxLineLength)
	cases := []struct {
		name string
		text string
		line int // 0: not a SyntaxError
	}{
		{"line too long", "alice " + ed + "\n" + long + "\n", 2},
		{"last line too long", long, 1},
		{"NUL byte", "alice " + ed + "\x00\n", 1},
		{"file too large", strings.Repeat("# padding "+strings.Repeat("x", 1000)+"\n", MaxAllowedSignersSize/1000+1), 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseAllowedSigners(strings.NewReader(c.text))
			t.Logf("ParseAllowedSigners: %v", err)
			if !errors.Is(err, ErrAllowedSigners) {
				t.Fatalf("error %v, want ErrAllowedSigners", err)
			}
			var se *SyntaxError
			if c.line != 0 && (!errors.As(err, &se) || se.Line != c.line) {
				t.Errorf("error %v, want a SyntaxError on line %d", err, c.line)
			}
		})
	}

	// A line of exactly MaxLineLength bytes, and a file of exactly
	// MaxAllowedSignersSize bytes, are fine.
	exact := "alice " + ed + " "
	exact += strings.Repeat("c", MaxLineLength-len(exact))
	if _, err := ParseAllowedSigners(strings.NewReader(exact + "\n")); err != nil {
		t.Errorf("line of %d bytes: %v", len(exact), err)
	}
	var b strings.Builder
	b.WriteString(exact + "\n")
	for rem := MaxAllowedSignersSize - b.Len(); rem > 0; rem = MaxAllowedSignersSize - b.Len() {
		if n := min(rem, 1000); n == 1 {
			b.WriteString("\n")
		} else {
			b.WriteString("#" + strings.Repeat("x", n-2) + "\n")
		}
	}
	if b.Len() != MaxAllowedSignersSize {
		t.Fatalf("built %d bytes", b.Len())
	}
	if _, err := ParseAllowedSigners(strings.NewReader(b.String())); err != nil {
		t.Errorf("file of %d bytes: %v", b.Len(), err)
	}
}

func TestLoadAllowedSigners(t *testing.T) {
	ed, _ := testKeys(t)
	dir := t.TempDir()
	good := testkit.WriteFile(t, filepath.Join(dir, "good"), []byte("alice "+ed+"\n"), 0o600)
	if a, err := LoadAllowedSigners(good); err != nil || len(a.Entries()) != 1 {
		t.Fatalf("LoadAllowedSigners = %v, %v", a, err)
	}
	bad := testkit.WriteFile(t, filepath.Join(dir, "bad"), []byte("alice\n"), 0o600)
	if _, err := LoadAllowedSigners(bad); !errors.Is(err, ErrAllowedSigners) || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: %v", err)
	}
	if _, err := LoadAllowedSigners(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseTime(t *testing.T) {
	cases := []struct {
		in   string
		want time.Time // zero: error
	}{
		{"20240101Z", utc(2024, 1, 1, 0, 0, 0)},
		{"20240101z", utc(2024, 1, 1, 0, 0, 0)},
		{"20240101UTC", utc(2024, 1, 1, 0, 0, 0)},
		{"202402291230Z", utc(2024, 2, 29, 12, 30, 0)},
		{"20240229123059Z", utc(2024, 2, 29, 12, 30, 59)},
		{"20231231235960Z", utc(2024, 1, 1, 0, 0, 0)}, // a leap second rolls over, as with mktime
		{"20240101", time.Date(2024, 1, 1, 0, 0, 0, 0, time.Local)},
		{"19700101000001Z", utc(1970, 1, 1, 0, 0, 1)},
		{"", time.Time{}},
		{"Z", time.Time{}},
		{"UTC", time.Time{}},
		{"2024010Z", time.Time{}},
		{"202401011Z", time.Time{}},
		{"2024010112301Z", time.Time{}},
		{"20240101ZZ", time.Time{}},
		{"+2024010Z", time.Time{}},
		{"20240001Z", time.Time{}},
		{"20240100Z", time.Time{}},
		{"20240132Z", time.Time{}},
		{"202401010060Z", time.Time{}},
		{"19700101Z", time.Time{}},
		{"19600101Z", time.Time{}},
		{"20240101 Z", time.Time{}},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := parseTime(c.in)
			if c.want.IsZero() {
				if err == nil {
					t.Fatalf("parseTime(%q) = %v, want an error", c.in, got)
				}
				return
			}
			if err != nil || !got.Equal(c.want) {
				t.Fatalf("parseTime(%q) = %v, %v; want %v", c.in, got, err, c.want)
			}
		})
	}
}

func TestMatchPattern(t *testing.T) {
	cases := []struct {
		s, p string
		want bool
	}{
		{"", "", true},
		{"a", "", false},
		{"", "*", true},
		{"", "?", false},
		{"abc", "abc", true},
		{"abc", "ab", false},
		{"abc", "a?c", true},
		{"abc", "a*", true},
		{"abc", "*c", true},
		{"abc", "*b*", true},
		{"abc", "*d*", false},
		{"aXbXc", "a*b*c", true},
		{"ab", "a**b", true},
		{"abcbd", "*b?", true},
		{"mississippi", "m*iss*ppi", true},
		{"mississippi", "m*iss*ppx", false},
		{"a@example.com", "*@example.com", true},
		{"A@EXAMPLE.COM", "*@example.com", false},
	}
	for _, c := range cases {
		if got := matchPattern(c.s, c.p); got != c.want {
			t.Errorf("matchPattern(%q, %q) = %v", c.s, c.p, got)
		}
	}

	lists := []struct {
		s, list string
		want    int
	}{
		{"alice", "alice", 1},
		{"alice", "bob,alice", 1},
		{"alice", "bob", 0},
		{"alice", "", 0},
		{"alice", "!alice", -1},
		{"alice", "*,!alice", -1},
		{"alice", "!alice,*", -1},
		{"bob", "*,!alice", 1},
		{"bob", "!alice", 0},
		{"", "!", -1},
		{"", ",", 1}, // an empty entry matches the empty name, as in OpenSSH
		{"alice", "alice,", 1},
		{"alice", strings.Repeat("x", maxSubpattern) + ",alice", 0},
		{"alice", "alice," + strings.Repeat("x", maxSubpattern), 0},
		{"alice", strings.Repeat("x", maxSubpattern-1) + ",alice", 1},
	}
	for _, c := range lists {
		if got := matchPatternList(c.s, c.list); got != c.want {
			t.Errorf("matchPatternList(%q, %.40q) = %d, want %d", c.s, c.list, got, c.want)
		}
	}

	positive := []struct {
		list string
		want bool
	}{
		{"alice", true},
		{"!alice", false},
		{"!alice,!bob", false},
		{"", false},
		{",", false},
		{"!a,b", true},
		{"*", true},
		{"alice," + strings.Repeat("x", maxSubpattern), false},
	}
	for _, c := range positive {
		if got := hasPositivePattern(c.list); got != c.want {
			t.Errorf("hasPositivePattern(%.40q) = %v", c.list, got)
		}
	}
}

// A naive recursive matcher takes exponential time on this; the bound is
// generous so a slow machine does not fail, yet far below exponential.
func TestMatchPatternHostile(t *testing.T) {
	s := strings.Repeat("a", MaxLineLength/2)
	p := strings.Repeat("*a", 500) + "*b"
	start := time.Now()
	if matchPatternList(s, p) != 0 {
		t.Fatal("matched")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func ExampleParseAllowedSigners() {
	allowed := `# who may sign the index
release@example.com namespaces="canga-index" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOrvP89uyupCbqyFcCz1nNtKuLT8YIUkj0Vhf/xYamSs
*@example.com cert-authority,valid-before="20300101Z" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINNwMHM8lLcve+HMdKmjaanRnkdOE0Sm3ZUxkjv5LTgg
`
	a, err := ParseAllowedSigners(strings.NewReader(allowed))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range a.Entries() {
		fmt.Println(e.Line, e.Principals, e.CertAuthority, e.Namespaces, e.ValidBefore.Format(time.DateOnly))
	}
	// Output:
	// 2 release@example.com false canga-index 0001-01-01
	// 3 *@example.com true  2030-01-01
}
