package guestfs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// readCommandsFile is virt-customize's reader of --commands-from-file
// (guestfs-tools common/mlcustomize/customize_cmdline.ml,
// customize_read_from_file, and common/mlstdutils/std_utils.ml,
// String.lines_split), ported line for line: it is the oracle the rendered
// files are checked against.
func readCommandsFile(s string) [][2]string {
	// lines_split: a backslash before a newline becomes a newline and the
	// line goes on; the last line gets the same treatment at end of input.
	var lines []string
	var buf strings.Builder
	start := 0
	for {
		i := strings.IndexByte(s[start:], '\n')
		if i < 0 {
			rest := s[start:]
			if strings.HasSuffix(rest, `\`) {
				buf.WriteString(rest[:len(rest)-1])
				buf.WriteByte('\n')
			} else {
				buf.WriteString(rest)
			}
			lines = append(lines, buf.String())
			break
		}
		i += start
		if i > 0 && s[i-1] == '\\' {
			buf.WriteString(s[start : i-1])
			buf.WriteByte('\n')
		} else {
			buf.WriteString(s[start:i])
			lines = append(lines, buf.String())
			buf.Reset()
		}
		start = i + 1
	}
	var cmds [][2]string
	for _, l := range lines {
		l = strings.TrimLeft(l, " \t\n\r\f\v") // String.triml
		if l == "" || l[0] == '#' {
			continue
		}
		cmd, arg, _ := strings.Cut(l, " ") // String.split " "
		cmds = append(cmds, [2]string{cmd, arg})
	}
	return cmds
}

func TestReadCommandsFileOracle(t *testing.T) {
	// The behaviour observed with virt-customize 1.48.2: a trailing
	// backslash, even doubled, swallows the next line.
	got := readCommandsFile("run-command echo a\\\nb\nrun-command echo trail\\\\\nrun-command echo \"second\"\n  # c\n\n")
	want := [][2]string{
		{"run-command", "echo a\nb"},
		{"run-command", "echo trail\\\nrun-command echo \"second\""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestCommandsExact(t *testing.T) {
	dir := fixture(t)
	src := `parent: base
files:
  - context /
run:
  - echo old
tasks:
  - copy: {src: my file.txt, dest: "/opt/my dir"}
  - run: |
      echo "a" 'b' $(c) \
        d
      echo even\\
  - run:
    - |-
      printf '%s\n' x
      run-command touch /pwned
  - change: {file: /etc/ssh/sshd_config, regexp: '^#?PermitRootLogin.*', text: 'PermitRootLogin no'}
  - delete: /var/log/*.log
  - password: {user: root, password: "se:cret \\"}
  - password: {user: nobody, disabled: true}
  - password: {user: bob, password: x}
`
	c := mustParse(t, src, dir)
	plan, err := c.Plan()
	if err != nil {
		t.Fatal(err)
	}
	got := string(plan.Commands("/S"))
	want := `# virt-customize --commands-from-file, written by canga from a Cangafile
# line 3: copy
copy-in ` + dir + `/context:/
# line 5: run
run-command echo old
# line 7: copy
mkdir /opt/my dir
copy-in ` + dir + `/my file.txt:/opt/my dir
# line 9: run
run-command echo "a" 'b' $(c) \\
  d
# line 11: run
run-command echo even\\ 
# line 13: run
run-command printf '%s\n' x\
run-command touch /pwned
# line 16: change
edit /etc/ssh/sshd_config:my ($r, $t) = (pack("H*", "5e233f5065726d6974526f6f744c6f67696e2e2a"), pack("H*", "5065726d6974526f6f744c6f67696e206e6f")); if (utf8::decode($_)) { utf8::decode($r); utf8::decode($t); s/$r/$t/gu; utf8::encode($_) } else { s/$r/$t/g }
# line 17: delete
delete /var/log/*.log
# line 18: password
password root:file:/S/password-0
# line 19: password
password nobody:disabled
# line 20: password
password bob:file:/S/password-1
# virt-customize sets passwords last and skips unknown users: check they exist
run-command while IFS=: read -r u _; do [ "$u" = 'root' ] && exit 0; done < /etc/shadow; echo "canga: password: no user 'root' in the guest's /etc/shadow" >&2; exit 1
run-command while IFS=: read -r u _; do [ "$u" = 'nobody' ] && exit 0; done < /etc/shadow; echo "canga: password: no user 'nobody' in the guest's /etc/shadow" >&2; exit 1
run-command while IFS=: read -r u _; do [ "$u" = 'bob' ] && exit 0; done < /etc/shadow; echo "canga: password: no user 'bob' in the guest's /etc/shadow" >&2; exit 1
`
	if got != want {
		t.Errorf("commands file:\n%s\nwant:\n%s", got, want)
	}
	if s := plan.secrets(); !reflect.DeepEqual(s, []string{`se:cret \`, "x"}) {
		t.Errorf("secrets = %q", s)
	}
	if strings.Contains(got, "se:cret") {
		t.Error("a password is in the commands file")
	}

	// What virt-customize reads back: one command per line above, the
	// embedded newlines restored.
	cmds := readCommandsFile(got)
	wantCmds := [][2]string{
		{"copy-in", dir + "/context:/"},
		{"run-command", "echo old"},
		{"mkdir", "/opt/my dir"},
		{"copy-in", dir + "/my file.txt:/opt/my dir"},
		{"run-command", "echo \"a\" 'b' $(c) \\\n  d"},
		{"run-command", `echo even\\ `},
		{"run-command", "printf '%s\\n' x\nrun-command touch /pwned"},
		{"edit", cmds[7][1]},
		{"delete", "/var/log/*.log"},
		{"password", "root:file:/S/password-0"},
		{"password", "nobody:disabled"},
		{"password", "bob:file:/S/password-1"},
		{"run-command", userCheck("root")},
		{"run-command", userCheck("nobody")},
		{"run-command", userCheck("bob")},
	}
	if !reflect.DeepEqual(cmds, wantCmds) {
		t.Errorf("read back:\n%q\nwant\n%q", cmds, wantCmds)
	}
}

// Whatever a task holds, virt-customize reads back exactly the commands the
// task renders to: nothing can start another command.
func TestCommandsInjection(t *testing.T) {
	nasty := []string{
		"echo a\nrun-command touch /pwned",
		"echo a\\\nrun-command touch /pwned",
		"echo a\\\\\nrun-command touch /pwned",
		"echo a\n# comment\n\n   run-command x",
		"echo a \\\\",
		"echo a \\\\\\\\",
		"echo 'quote\" \\' $(x) `y` ${z} # w",
		"echo a\r\nrun-command b",
		"\n\nrun-command x",
		"echo Ünïcödé ☃\nmkdir /x",
		"echo tab\t\\\n\tdelete /",
	}
	for _, cmd := range nasty {
		cases := []Task{
			{Kind: KindRun, Command: cmd},
			{Kind: KindDelete, Path: "/x/" + cmd},
			{Kind: KindCopy, Src: "/host/src", Dest: "/d/" + cmd},
			{Kind: KindChange, File: "/f\n" + strings.ReplaceAll(cmd, ":", ""), Regexp: "a", Text: cmd},
		}
		for _, task := range cases {
			if err := task.check(); err != nil {
				// Only a path ending in a backslash is refused.
				if !strings.HasSuffix(cmd, `\`) || task.Kind == KindRun {
					t.Errorf("%v %q: %v", task.Kind, cmd, err)
				}
				continue
			}
			plan, err := NewPlan([]Task{task})
			if err != nil {
				t.Fatal(err)
			}
			got := readCommandsFile(string(plan.Commands("/S")))
			var want [][2]string
			switch task.Kind {
			case KindRun:
				want = [][2]string{{"run-command", runArg(cmd)}}
			case KindDelete:
				want = [][2]string{{"delete", task.Path}}
			case KindCopy:
				want = [][2]string{{"mkdir", task.Dest}, {"copy-in", "/host/src:" + task.Dest}}
			case KindChange:
				want = [][2]string{{"edit", task.File + ":" + perlReplace(task.Regexp, task.Text)}}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%v %q:\n got %q\nwant %q", task.Kind, cmd, got, want)
			}
		}
	}
}

func FuzzRunCommand(f *testing.F) {
	for _, s := range []string{"echo hi", "a\\", "a\\\\", "a\nb", "a\\\nb", "#x", " \n# x\\\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		task := Task{Kind: KindRun, Command: cmd}
		if task.check() != nil {
			return
		}
		plan, err := NewPlan([]Task{task})
		if err != nil {
			t.Fatal(err)
		}
		got := readCommandsFile(string(plan.Commands("/S")))
		want := [][2]string{{"run-command", runArg(cmd)}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: got %q", cmd, got)
		}
	})
}

// The space runArg adds after an even run of backslashes does not change
// what sh does.
func TestRunArgShellMeaning(t *testing.T) {
	for _, cmd := range []string{`printf '[%s]' a\\`, `printf '[%s]' a\\\\`, `printf '[%s]' 'x y'\\\\\\`, `printf '[%s]' x # c\\`} {
		a, err := exec.Command("sh", "-c", cmd).Output()
		if err != nil {
			t.Fatal(err)
		}
		b, err := exec.Command("sh", "-c", runArg(cmd)).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) || runArg(cmd) == cmd {
			t.Errorf("%q: sh prints %q, with the space %q", cmd, a, b)
		}
	}
}

// perlEdit runs expr the way virt-customize's edit does (the canned script
// of common/edit/file-edit.c, with the host's perl).
func perlEdit(t *testing.T, expr, input string) (string, error) {
	t.Helper()
	cmd := exec.Command("perl", "-e", `$lineno = 0; $expr = $ENV{virt_edit_expr}; `+
		`while (<STDIN>) { $lineno++; eval $expr; die if $@; print STDOUT $_ or die "print: $!"; } `+
		`close STDOUT or die "close: $!";`)
	cmd.Env = append(os.Environ(), "virt_edit_expr="+expr, "LANG=C")
	cmd.Stdin = strings.NewReader(input)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), errors.New(err.Error() + ": " + stderr.String())
	}
	return out.String(), nil
}

func TestPerlReplace(t *testing.T) {
	tests := []struct {
		name, re, text, in, want string
	}{
		{"spec example", `^#?PermitRootLogin.*`, "PermitRootLogin no",
			"a\n#PermitRootLogin yes\nPermitRootLogin without-password\nx PermitRootLogin\n",
			"a\nPermitRootLogin no\nPermitRootLogin no\nx PermitRootLogin\n"},
		{"text taken literally", `^key=.*`, `key=/a/b & \1 $1 ${1} @x @{[ die ]} 'q" \\ é`,
			"key=old\n", "key=/a/b & \\1 $1 ${1} @x @{[ die ]} 'q\" \\\\ é\n"},
		{"text with a newline", `^a$`, "a\nb", "a\nc\n", "a\nb\nc\n"},
		{"regexp with slash and at", `user@host:/srv/(older|old)`, "user@host:/srv/new", "x user@host:/srv/older y\n", "x user@host:/srv/new y\n"},
		{"regexp with quotes and dollar", `'a" \$HOME`, "b", `x'a" $HOME` + "\n", "xb\n"},
		{"every match", `o`, "0", "foo boo\n", "f00 b00\n"},
		{"end of line anchor", `foo$`, "bar", "foo\nfoo x\n", "bar\nfoo x\n"},
		{"unicode characters", `é+`, "e", "caféé ééé\n", "cafe e\n"},
		{"unicode classes", `^\w+`, "W", "ünïcödé rest\n", "W rest\n"},
		{"invalid UTF-8 line", `a`, "é", "\xffa\n", "\xff\xc3\xa9\n"},
		{"empty text", `#.*`, "", "x # y\n", "x \n"},
		{"no match", `zzz`, "y", "abc\n", "abc\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := perlEdit(t, perlReplace(tt.re, tt.text), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// A pattern cannot run Perl code on the host.
func TestPerlReplaceNoCode(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "pwned")
	for _, re := range []string{
		`(?{ open(F, ">` + marker + `") })`,
		`(??{ open(F, ">` + marker + `") })`,
		`@{[ open(F, ">` + marker + `") ]}`,
		`${\ open(F, ">` + marker + `") }`,
	} {
		_, err := perlEdit(t, perlReplace(re, "x"), "line\n")
		if _, serr := os.Stat(marker); serr == nil {
			t.Fatalf("pattern %q ran code", re)
		}
		if strings.Contains(re, "(?") && (err == nil || !strings.Contains(err.Error(), "Eval-group not allowed at runtime")) {
			t.Errorf("pattern %q: err = %v, want Perl's refusal", re, err)
		}
	}
}

// The guest check of password users, run with sh on a shadow file.
func TestUserCheck(t *testing.T) {
	shadow := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(shadow, []byte("root:*:1::::::\nbob$:x:1::::::\nalice.b:!:1::::::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for user, ok := range map[string]bool{"root": true, "bob$": true, "alice.b": true, "alice": false, "aliceXb": false, "ro": false} {
		script := strings.ReplaceAll(userCheck(user), "/etc/shadow", shadow)
		out, err := exec.Command("sh", "-c", script).CombinedOutput()
		if (err == nil) != ok {
			t.Errorf("user %q: err = %v, want ok=%v (%s)", user, err, ok, out)
		}
		if !ok && !strings.Contains(string(out), "no user '"+user+"'") {
			t.Errorf("user %q: output %q", user, out)
		}
	}
}

func TestNewPlanRejects(t *testing.T) {
	tests := []struct {
		name string
		task Task
		msg  string
	}{
		{"relative copy source", Task{Kind: KindCopy, Src: "ctx", Dest: "/"}, "absolute host path"},
		{"colon in copy source", Task{Kind: KindCopy, Src: "/a:b", Dest: "/"}, "contains ':'"},
		{"relative copy dest", Task{Kind: KindCopy, Src: "/a", Dest: "x"}, "absolute guest path"},
		{"blank command", Task{Kind: KindRun, Command: " \n "}, "empty command"},
		{"odd trailing backslash", Task{Kind: KindRun, Command: `echo \\\`}, "ends with a backslash"},
		{"NUL", Task{Kind: KindRun, Command: "a\x00"}, "NUL"},
		{"bad regexp", Task{Kind: KindChange, File: "/a", Regexp: "(", Text: ""}, "invalid regexp"},
		{"empty regexp", Task{Kind: KindChange, File: "/a", Regexp: "", Text: ""}, "empty regexp"},
		{"delete root", Task{Kind: KindDelete, Path: "/"}, "root directory"},
		{"delete trailing backslash", Task{Kind: KindDelete, Path: `/a\`}, "backslash"},
		{"bad user", Task{Kind: KindPassword, User: "a b", Password: "x"}, "user name"},
		{"both", Task{Kind: KindPassword, User: "a", Password: "x", Disabled: true}, "not both"},
		{"neither", Task{Kind: KindPassword, User: "a"}, "empty password"},
		{"unknown kind", Task{Kind: Kind(42)}, "unknown task kind Kind(42)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPlan([]Task{{Kind: KindRun, Command: "true"}, tt.task})
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), "task 1") {
				t.Errorf("err = %v, want ErrInvalid naming task 1 and %q", err, tt.msg)
			}
		})
	}
	_, err := NewPlan([]Task{{Kind: KindPassword, User: "a", Password: "x"}, {Kind: KindPassword, User: "a", Disabled: true}})
	if err == nil || !strings.Contains(err.Error(), "two password tasks") {
		t.Errorf("duplicate user: %v", err)
	}
}

func TestDryRun(t *testing.T) {
	plan, err := NewPlan([]Task{
		{Kind: KindRun, Command: "echo 'hi'"},
		{Kind: KindPassword, User: "root", Password: "hunter2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("LIBGUESTFS_BACKEND", "")
	got := DryRun("/repo/.tmp/over lay.qcow2", plan, Options{NoNetwork: true, MemsizeMB: 2048, SMP: 2})
	want := `LIBGUESTFS_BACKEND=direct virt-customize --format qcow2 -a '/repo/.tmp/over lay.qcow2' --no-network --no-logfile -m 2048 --smp 2 --commands-from-file /repo/.tmp/guestfs-XXXXXX/commands
LIBGUESTFS_BACKEND=direct virt-sparsify --format qcow2 --in-place '/repo/.tmp/over lay.qcow2'
# /repo/.tmp/guestfs-XXXXXX/commands:
# virt-customize --commands-from-file, written by canga from a Cangafile
# run
run-command echo 'hi'
# password
password root:file:/repo/.tmp/guestfs-XXXXXX/password-0
# virt-customize sets passwords last and skips unknown users: check they exist
run-command ` + userCheck("root") + `
`
	if got != want {
		t.Errorf("DryRun:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(got, "hunter2") {
		t.Error("DryRun shows a password")
	}

	got = DryRun("o.qcow2", plan, Options{KeepLogfile: true, SELinuxRelabel: true, TempDir: "/t",
		Env: []string{"LIBGUESTFS_BACKEND=libvirt"}, Tools: Tools{VirtCustomize: "/opt/vc", VirtSparsify: "/opt/vs"}})
	first := strings.SplitN(got, "\n", 2)[0]
	abs, _ := filepath.Abs("o.qcow2")
	if first != "LIBGUESTFS_BACKEND=libvirt /opt/vc --format qcow2 -a "+abs+" --selinux-relabel --commands-from-file /t/guestfs-XXXXXX/commands" {
		t.Errorf("DryRun first line = %q", first)
	}
}
