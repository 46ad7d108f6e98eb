package guestfs

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// userRE is what a password task accepts as a user name: the portable
// POSIX user name characters (plus a trailing `$`, as for Samba machine
// accounts). It also keeps the name safe to quote in the guest check.
var userRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$`)

// checkGuestPath checks a guest path argument: absolute, and writable in a
// commands file (no trailing backslash).
func checkGuestPath(what, p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%s %q must be an absolute guest path", what, p)
	case strings.HasSuffix(p, `\`):
		return fmt.Errorf("%s %q ends with a backslash, which virt-customize's commands file cannot express", what, p)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("%s must not contain a NUL character", what)
	}
	return nil
}

// check validates a task for rendering: what the commands-file syntax and
// virt-customize's argument splitting can express.
func (t *Task) check() error {
	for _, s := range []string{t.Src, t.Dest, t.Command, t.File, t.Regexp, t.Text, t.Path, t.User, t.Password} {
		if strings.ContainsRune(s, 0) {
			return errors.New("must not contain a NUL character")
		}
	}
	switch t.Kind {
	case KindCopy:
		switch {
		case !filepath.IsAbs(t.Src):
			return fmt.Errorf("source %q must be an absolute host path", t.Src)
		case strings.Contains(t.Src, ":"):
			// copy-in's argument is split at its first colon.
			return fmt.Errorf("source %q contains ':', which virt-customize's copy-in cannot express (it splits SRC:DEST at the first colon)", t.Src)
		}
		return checkGuestPath("destination", t.Dest)
	case KindRun:
		if strings.TrimSpace(t.Command) == "" {
			return errors.New("empty command")
		}
		if trailingBackslashes(t.Command)%2 == 1 {
			return errors.New("command ends with a backslash (a line continuation with nothing after it)")
		}
	case KindChange:
		if err := checkGuestPath("file", t.File); err != nil {
			return err
		}
		if strings.Contains(t.File, ":") {
			return fmt.Errorf("file %q contains ':', which virt-customize's edit cannot express (it splits FILE:EXPR at the first colon)", t.File)
		}
		if t.Regexp == "" {
			return errors.New("empty regexp")
		}
		if _, err := regexp.Compile(t.Regexp); err != nil {
			return fmt.Errorf("invalid regexp: %w", err)
		}
	case KindDelete:
		if err := checkGuestPath("path", t.Path); err != nil {
			return err
		}
		if strings.Trim(t.Path, "/") == "" {
			return fmt.Errorf("refusing to delete the guest's root directory %q", t.Path)
		}
	case KindPassword:
		if !userRE.MatchString(t.User) {
			return fmt.Errorf("user %q is not a valid user name (letters, digits, '_', '.', '-')", t.User)
		}
		switch {
		case t.Disabled && t.Password != "":
			return errors.New("give either password or disabled: true, not both")
		case !t.Disabled && t.Password == "":
			return errors.New("empty password (use disabled: true to disable password login)")
		case strings.ContainsAny(t.Password, "\n"):
			// virt-customize reads the first line of the password file.
			return errors.New("password must not contain a newline")
		}
	default:
		return fmt.Errorf("unknown task kind %v", t.Kind)
	}
	return nil
}

// Plan is the virt-customize work for a list of tasks.
type Plan struct {
	tasks []Task
}

// NewPlan validates tasks and makes a plan of them.
func NewPlan(tasks []Task) (*Plan, error) {
	seen := map[string]bool{}
	for i := range tasks {
		t := &tasks[i]
		if err := t.check(); err != nil {
			return nil, fmt.Errorf("%w: task %d (%v, line %d): %v", ErrInvalid, i, t.Kind, t.Line, err)
		}
		if t.Kind == KindPassword {
			if seen[t.User] {
				return nil, fmt.Errorf("%w: task %d: user %q has two password tasks", ErrInvalid, i, t.User)
			}
			seen[t.User] = true
		}
	}
	return &Plan{tasks: append([]Task(nil), tasks...)}, nil
}

// Plan makes the plan of the Cangafile's tasks.
func (c *Cangafile) Plan() (*Plan, error) { return NewPlan(c.Tasks) }

// Tasks returns the plan's tasks.
func (p *Plan) Tasks() []Task { return append([]Task(nil), p.tasks...) }

func (p *Plan) has(k Kind) bool {
	for _, t := range p.tasks {
		if t.Kind == k {
			return true
		}
	}
	return false
}

// secrets returns the passwords, in the order of their files.
func (p *Plan) secrets() []string {
	var s []string
	for _, t := range p.tasks {
		if t.Kind == KindPassword && !t.Disabled {
			s = append(s, t.Password)
		}
	}
	return s
}

func secretFile(dir string, i int) string {
	return filepath.Join(dir, "password-"+strconv.Itoa(i))
}

// Commands renders the plan as a virt-customize --commands-from-file file.
// Passwords are referenced as files password-N in secretDir (the Nth
// password task that sets a password), which [Run] writes.
func (p *Plan) Commands(secretDir string) []byte {
	var b strings.Builder
	b.WriteString("# virt-customize --commands-from-file, written by canga from a Cangafile\n")
	line := func(cmd, arg string) {
		b.WriteString(cmd)
		b.WriteByte(' ')
		b.WriteString(encodeArg(arg))
		b.WriteByte('\n')
	}
	secret := 0
	var users []string
	for _, t := range p.tasks {
		if t.Line > 0 {
			fmt.Fprintf(&b, "# line %d: %v\n", t.Line, t.Kind)
		} else {
			fmt.Fprintf(&b, "# %v\n", t.Kind)
		}
		switch t.Kind {
		case KindCopy:
			if strings.Trim(t.Dest, "/") != "" {
				line("mkdir", t.Dest)
			}
			line("copy-in", t.Src+":"+t.Dest)
		case KindRun:
			line("run-command", runArg(t.Command))
		case KindChange:
			line("edit", t.File+":"+perlReplace(t.Regexp, t.Text))
		case KindDelete:
			line("delete", t.Path)
		case KindPassword:
			users = append(users, t.User)
			if t.Disabled {
				line("password", t.User+":disabled")
			} else {
				line("password", t.User+":file:"+secretFile(secretDir, secret))
				secret++
			}
		}
	}
	if len(users) > 0 {
		b.WriteString("# virt-customize sets passwords last and skips unknown users: check they exist\n")
		for _, u := range users {
			line("run-command", userCheck(u))
		}
	}
	return []byte(b.String())
}

// encodeArg writes an argument for the commands file: a newline in it
// becomes a backslash-newline, which virt-customize turns back into a
// newline of the same argument. Callers have rejected arguments that end
// with a backslash, the one thing the syntax cannot express.
func encodeArg(s string) string {
	return strings.ReplaceAll(s, "\n", "\\\n")
}

// runArg makes a command's trailing backslash expressible: after an even
// number of backslashes the shell reads a following space as a separator,
// so adding one changes nothing for sh but keeps the last backslash from
// joining the commands file's next line.
func runArg(cmd string) string {
	if n := trailingBackslashes(cmd); n > 0 && n%2 == 0 {
		return cmd + " "
	}
	return cmd
}

// perlReplace builds the Perl expression virt-customize's edit evaluates for
// each line ($_, newline included). The pattern and text travel as hex so
// no Cangafile byte is ever Perl source; a pattern from a variable cannot
// run code ((?{...}) needs `use re 'eval'`) and a replacement from a
// variable is inserted literally. UTF-8 lines are matched as characters.
func perlReplace(re, text string) string {
	return fmt.Sprintf(`my ($r, $t) = (pack("H*", "%x"), pack("H*", "%x")); `+
		`if (utf8::decode($_)) { utf8::decode($r); utf8::decode($t); s/$r/$t/gu; utf8::encode($_) } `+
		`else { s/$r/$t/g }`, re, text)
}

// userCheck is the guest shell command that fails unless user is in
// /etc/shadow. user matches userRE, so it is safe inside single quotes.
func userCheck(user string) string {
	return fmt.Sprintf(`while IFS=: read -r u _; do [ "$u" = '%s' ] && exit 0; done < /etc/shadow; `+
		`echo "canga: password: no user '%s' in the guest's /etc/shadow" >&2; exit 1`, user, user)
}
