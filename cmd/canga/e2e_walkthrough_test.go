package main_test

// Cangallo's README, replayed as a new user would type it (seed/
// cangallo-README.md beside SPEC.md): its command list, and its walk-
// through from `create test.qcow2 1G` to `pull remote:PREFIX`. Each run
// has a $HOME of its own, so that canga's home is the default
// ~/.cangallo and canga sign finds ~/.ssh/id_ed25519 as a user's would;
// there is no ssh-agent unless a test starts one.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cangallo/canga/internal/testkit"
)

// walkCommandList is the command list of Cangallo's README, verbatim.
const walkCommandList = `  canga --version, -V              # show version
  canga add FILE [REPO]            # add a new file to the repository
  canga build CANGAFILE            # create a new image using a Cangafile
  canga create FILE [SIZE]         # create a new qcow2 image
  canga del IMAGE                  # delete an image from the repo
  canga deltag TAGNAME             # deletes a tag
  canga export IMAGE OUTPUT        # export an image to a file
  canga fetch [REPO]               # download the index of the repository
  canga help [COMMAND]             # Describe available commands or one specific command
  canga import IMAGE [repository]  # import an image from a remote repository
  canga list [REPO]                # list images
  canga overlay IMAGE FILE         # create a new image based on another one
  canga pull NAME                  # downloads an image from a remote repository
  canga show IMAGE                 # show information about an image
  canga sign [REPO]                # sign the index file with keybase
  canga tag TAGNAME IMAGE          # add a tag name to an existing image
  canga verify [REPO]              # verify index signature with keybase
`

// walkCangafile is the README's Cangafile ("Creating a derived image"):
// its older form, files: and run:. PARENT is replaced by the first 40 hex
// digits of the parent's image ID, as the README gives it. Of its run
// lines, those that need the network or a package the guest lacks
// (apt-get remove cloud-init, apt-get install ...) are left out: the
// test guest has no network and no package lists.
const walkCangafile = `---
description: OpenNebula Compatible Ubuntu 16.04
os: Ubuntu 16.04
parent: PARENT
files:
  - context /
run:
  - dpkg -i /context/one-context*deb
  - rm -rf /context
  - apt-get clean
`

const (
	walkDescription = "OpenNebula Compatible Ubuntu 16.04"
	walkPrincipal   = "walker@example.org"
)

// walker is a user on a fresh machine account.
type walker struct {
	t       *testing.T
	user    string // $HOME
	ssh     string // $HOME/.ssh
	home    string // $HOME/.cangallo: canga's home, by default
	work    string // the working directory
	sock    string // $SSH_AUTH_SOCK; "" for no agent
	key     string // $HOME/.ssh/id_ed25519
	signers string // allowed_signers naming walkPrincipal for key
}

func newWalker(t *testing.T) *walker {
	t.Helper()
	user := t.TempDir()
	w := &walker{t: t, user: user, ssh: filepath.Join(user, ".ssh"), home: filepath.Join(user, ".cangallo"), work: t.TempDir()}
	if err := os.Mkdir(w.ssh, 0o700); err != nil {
		t.Fatal(err)
	}
	w.key = testkit.Keygen(t, w.ssh, "id_ed25519", "", "-t", "ed25519")
	w.signers = walkAllowedSigners(t, t.TempDir(), walkPrincipal, w.key)
	return w
}

// walkAllowedSigners writes DIR/PRINCIPAL.allowed_signers naming
// principal for key's public half.
func walkAllowedSigners(t *testing.T, dir, principal, key string) string {
	t.Helper()
	pub := strings.TrimSpace(string(testkit.ReadFile(t, key+".pub")))
	return testkit.WriteFile(t, filepath.Join(dir, principal+".allowed_signers"),
		[]byte(principal+` namespaces="canga-index" `+pub+"\n"), 0o644)
}

// env is the environment of every run: no CANGA_HOME, so the home is
// ~/.cangallo of this user.
func (w *walker) env() []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + w.user, "LC_ALL=C", "SSH_AUTH_SOCK=" + w.sock}, guestfsEnv()...)
}

func (w *walker) run(args ...string) result {
	w.t.Helper()
	return runCangaEnv(w.t, w.env(), w.work, cangaTimeout, false, args...)
}

func (w *walker) ok(args ...string) string {
	w.t.Helper()
	r := w.run(args...)
	if r.code != 0 {
		w.t.Fatalf("%v", r)
	}
	requireNoPanic(w.t, r)
	return r.stdout
}

func (w *walker) fails(args ...string) result {
	w.t.Helper()
	r := w.run(args...)
	requireCleanFailure(w.t, r)
	return r
}

func (w *walker) path(name string) string { return filepath.Join(w.work, name) }

// configTop sets a top-level key of config.yaml (first of the file, so
// that repositories can still be added at its end).
func (w *walker) configTop(key, value string) {
	w.t.Helper()
	file := filepath.Join(w.home, "config.yaml")
	var kept []string
	for _, l := range strings.SplitAfter(string(testkit.ReadFile(w.t, file)), "\n") {
		if !strings.HasPrefix(l, key+":") {
			kept = append(kept, l)
		}
	}
	text := strings.Join(kept, "")
	if value != "" {
		text = key + ": " + value + "\n" + text
	}
	testkit.WriteFile(w.t, file, []byte(text), 0o644)
}

// configRepo adds a repository at the end of config.yaml, under repos:.
func (w *walker) configRepo(name string, fields ...string) {
	w.t.Helper()
	file := filepath.Join(w.home, "config.yaml")
	text := string(testkit.ReadFile(w.t, file)) + "  " + name + ":\n"
	for i := 0; i+1 < len(fields); i += 2 {
		text += "    " + fields[i] + ": " + fields[i+1] + "\n"
	}
	testkit.WriteFile(w.t, file, []byte(text), 0o644)
}

// serve starts canga serve of the default repository, as this user.
func (w *walker) serve() string {
	w.t.Helper()
	for range 3 {
		addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(w.t))
		if testkit.StartServer(w.t, "http://"+addr+"/index.yaml", w.env(), cangaBin, "serve", "--addr", addr) {
			return "http://" + addr + "/"
		}
	}
	w.t.Fatal("canga serve would not start")
	return ""
}

// listFlags reads canga list's table: REPO:NAME -> its two flag columns
// (^ has a parent, * not downloaded), as the README shows them.
func (w *walker) listFlags() map[string]string {
	w.t.Helper()
	out := w.ok("list")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || !strings.Contains(lines[0], "NAME") || !strings.Contains(lines[0], "DESCRIPTION") {
		w.t.Fatalf("list: no NAME ... DESCRIPTION header\n%s", out)
	}
	m := map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l[min(2, len(l)):])
		if len(l) < 3 || len(f) == 0 {
			w.t.Fatalf("list: line %q\n%s", l, out)
		}
		m[f[0]] = l[:2]
	}
	return m
}

// requireFlags checks listFlags against want, and that nothing else is
// listed.
func (w *walker) requireFlags(step string, want map[string]string) {
	w.t.Helper()
	got := w.listFlags()
	for name, f := range want {
		if got[name] != f {
			w.t.Errorf("%s: list shows %q as %q, want %q\nall: %q", step, name, got[name], f, got)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			w.t.Errorf("%s: list shows %q, not expected (want %q)", step, name, want)
		}
	}
}

// showJSON is canga show --json's id, parent, description and os.
func (w *walker) showJSON(image string) bldShow {
	w.t.Helper()
	var s bldShow
	if out := w.ok("show", "--json", image); json.Unmarshal([]byte(out), &s) != nil {
		w.t.Fatalf("show --json %s: %s", image, out)
	}
	return s
}

// hexPrefix is the first n hex digits of an image ID, as Cangallo named
// images by bare hex.
func hexPrefix(id string, n int) string { return strings.TrimPrefix(id, "sha256:")[:n] }

// TestWalkthrough replays the README's usage section in order, each step
// checked against what the README shows it doing.
func TestWalkthrough(t *testing.T) {
	w := newWalker(t)

	// $ ./canga: the command list, as the README's first example.
	out := w.ok()
	for _, c := range walkReadmeCommands(t) {
		if c.name != "" && !regexp.MustCompile(`(?m)^\s+`+c.name+`\s`).MatchString(out) {
			t.Errorf("bare canga does not list %s\n%s", c.name, out)
		}
	}
	if _, err := os.Stat(w.home); err == nil {
		t.Errorf("bare canga made %s: listing the commands needs no home", w.home)
	}

	// $ canga create test.qcow2 1G, then qemu-img info as the README shows.
	w.ok("create", "test.qcow2", "1G")
	test := w.path("test.qcow2")
	info := testkit.QemuInfo(t, test)
	if info.Format != "qcow2" || info.VirtualSize != 1<<30 || info.ClusterSize != 65536 || info.FormatSpecific == nil ||
		info.FormatSpecific.Data.Compat != "1.1" || info.FormatSpecific.Data.LazyRefcounts ||
		info.FormatSpecific.Data.RefcountBits != 16 || info.FormatSpecific.Data.Corrupt {
		t.Errorf("qemu-img info test.qcow2: %+v, want the README's: qcow2, 1 GiB, cluster 65536, compat 1.1, 16 refcount bits", info)
	}
	testkit.QemuCheck(t, test)

	// $ canga add test.qcow2 --tag test_image: into ~/.cangallo/default.
	baseID := strings.TrimSpace(w.ok("add", "test.qcow2", "--tag", "test_image"))
	if want := testkit.RawDigest(t, test).String(); baseID != want {
		t.Fatalf("add printed %q, want the image ID %s (sha256sum of qemu-img convert -O raw)", baseID, want)
	}
	base := w.showJSON("test_image")
	testkit.QemuCheck(t, blobPath(w.home, base.Blob))
	if got := testkit.Sha256sum(t, blobPath(w.home, base.Blob)).String(); got != base.Blob {
		t.Errorf("blob %s has sha256sum %s", base.Blob, got)
	}

	// $ canga list
	w.requireFlags("list after add", map[string]string{"default:test_image": "  "})

	// The derived image: a build from the README's Cangafile where the
	// libguestfs tests run, else an overlay changed by qemu-io.
	childID, parentID, want := walkChild(t, w, baseID)
	child := w.showJSON(childID)
	if child.Parent != parentID || child.Description != walkDescription || child.OS != "Ubuntu 16.04" {
		t.Errorf("the derived image: %+v, want parent %s, the README's description and os", child, parentID)
	}
	want["default:"+index16(childID)] = "^ "

	// $ canga list: the child has a parent (^) and its description.
	w.requireFlags("list after the derived image", want)
	if out := w.ok("list"); !regexp.MustCompile(`(?m)^\^ default:` + index16(childID) + `\s.*` + walkDescription + `$`).MatchString(out) {
		t.Errorf("list does not show the child with ^ and its description\n%s", out)
	}

	// $ canga tag ubuntu:one:16.04 ID: "ubuntu" is not a repository, so
	// the whole is a tag; the ID is 40 hex digits, as the README's.
	w.ok("tag", "ubuntu:one:16.04", hexPrefix(childID, 40))
	if s := w.showJSON("ubuntu:one:16.04"); s.ID != childID || !slices.Contains(s.Tags, "ubuntu:one:16.04") {
		t.Errorf("show ubuntu:one:16.04: %+v, want %s", s, childID)
	}
	delete(want, "default:"+index16(childID))
	want["default:ubuntu:one:16.04"] = "^ "
	w.requireFlags("list after tag", want)

	// $ canga sign: no --key, no signing_key, no agent: ~/.ssh/id_ed25519.
	w.configTop("allowed_signers", w.signers)
	out = w.ok("sign")
	fp := testkit.Fingerprint(t, w.key+".pub")
	if !strings.Contains(out, fp) || !strings.Contains(out, "key "+w.key+", the default") {
		t.Errorf("sign printed %q, want %s's fingerprint %s and that it was the default key", out, w.key, fp)
	}
	ix := filepath.Join(repoDir(w.home), "index.yaml")
	if out, ok := testkit.SSHVerify(t, w.signers, walkPrincipal, "canga-index", ix, ix+".sig"); !ok {
		t.Errorf("ssh-keygen -Y verify refuses %s.sig:\n%s", ix, out)
	}

	// $ canga verify: the top-level allowed_signers of config.yaml.
	out = w.ok("verify")
	if !strings.Contains(out, walkPrincipal) || !strings.Contains(out, fp) || !strings.Contains(out, w.signers) {
		t.Errorf("verify printed %q, want the signer %s, %s and the file %s", out, walkPrincipal, fp, w.signers)
	}

	// A remote: this repository served by canga serve, its signature
	// required by the allowed_signers of its entry.
	url := w.serve()
	cache := filepath.Join(w.home, "remote")
	w.configRepo("remote", "url", url, "path", cache, "allowed_signers", w.signers)

	// $ canga fetch --repo=remote
	out = w.ok("fetch", "--repo=remote")
	if !strings.HasPrefix(out, "remote: ") || !strings.Contains(out, "signed by "+walkPrincipal) {
		t.Errorf("fetch --repo=remote printed %q, want the remote's index signed by %s", out, walkPrincipal)
	}
	if got, want := testkit.ReadFile(t, filepath.Join(cache, "index.yaml")), testkit.ReadFile(t, ix); !bytes.Equal(got, want) {
		t.Errorf("the fetched index is not a byte-exact copy of the served one")
	}

	// $ canga list: the remote's images, not downloaded (*).
	for _, name := range slices.Collect(maps.Keys(want)) {
		want["remote:"+strings.TrimPrefix(name, "default:")] = want[name][:1] + "*"
	}
	w.requireFlags("list after fetch", want)

	// $ canga pull remote:PREFIX: the child and its ancestors.
	w.ok("pull", "remote:"+index16(childID))
	if parentID != baseID {
		// Built on the test guest, the child's chain does not hold
		// test_image: pull it too.
		w.ok("pull", "remote:test_image")
	}
	for name, f := range want {
		want[name] = f[:1] + " "
	}
	// $ canga list: nothing left to download.
	w.requireFlags("list after pull", want)
	pulled := remRequireGoodBlobs(t, cache)
	served := remRequireGoodBlobs(t, repoDir(w.home))
	slices.Sort(pulled)
	slices.Sort(served)
	if !slices.Equal(pulled, served) {
		t.Errorf("pulled blobs %v, want the served repository's %v", pulled, served)
	}
	if s := w.showJSON("remote:ubuntu:one:16.04"); s.ID != childID || s.Parent != parentID {
		t.Errorf("show remote:ubuntu:one:16.04 after pull: %+v", s)
	}
}

// index16 is the short ID list shows for an untagged image.
func index16(id string) string { return hexPrefix(id, 16) }

// walkChild makes the derived image of the walk-through and returns its
// ID, its parent's, and what list shows of the repository so far, the
// child aside. The README's Cangafile, in its context directory, is
// always rendered (build --dry-run shows the virt-customize commands the
// README's build prints). Where the libguestfs tests run it is then built
// on the test guest; elsewhere that one step is replaced by an overlay of
// test_image changed with qemu-io, added with --parent.
func walkChild(t *testing.T, w *walker, baseID string) (childID, parentID string, listed map[string]string) {
	t.Helper()
	listed = map[string]string{"default:test_image": "  "}
	guest := os.Getenv("CANGA_GUESTFS_TEST") == "1"
	parentID = baseID
	if guest {
		testkit.Need(t, "virt-customize", "virt-sparsify", "debugfs")
		parentID = strings.TrimSpace(w.ok("add", testkit.DebianGuest(t), "--tag", "ubuntu:16.04", "--os", "Debian 12 (bookworm)"))
		listed["default:ubuntu:16.04"] = "  "
	}
	ctx := w.path("context")
	mkdir(t, ctx)
	testkit.Need(t, "dpkg-deb")
	walkDeb(t, filepath.Join(ctx, "one-context_5.0.0_all.deb"))
	testkit.WriteFile(t, w.path("Cangafile.latest"), []byte(strings.Replace(walkCangafile, "PARENT", hexPrefix(parentID, 40), 1)), 0o644)
	out := w.ok("build", "--dry-run", "Cangafile.latest")
	for _, l := range []string{"copy-in " + ctx + ":/", "run-command dpkg -i /context/one-context*deb", "run-command rm -rf /context", "run-command apt-get clean"} {
		if !strings.Contains(out, "\n"+l+"\n") {
			t.Errorf("build --dry-run Cangafile.latest does not show %q, as the README's build does\n%s", l, out)
		}
	}

	if !guest {
		t.Log("the README's build step is skipped: it boots a guest with libguestfs, which runs only with CANGA_GUESTFS_TEST=1; " +
			"the derived image is an overlay of test_image changed with qemu-io and added with --parent instead")
		w.ok("overlay", "test_image", "child.qcow2")
		ch := w.path("child.qcow2")
		testkit.QemuIO(t, "qcow2", ch, "write -P 0x5a 1M 3M", "write -P 0xc3 900M 64k")
		childID = strings.TrimSpace(w.ok("add", "child.qcow2", "--parent", hexPrefix(baseID, 40),
			"--description", walkDescription, "--os", "Ubuntu 16.04"))
		if want := testkit.RawDigest(t, ch).String(); childID != want {
			t.Fatalf("add printed %q, want the child's image ID %s", childID, want)
		}
		return childID, baseID, listed
	}

	// $ canga build Cangafile.latest
	t0 := time.Now()
	r := runCangaEnv(t, w.env(), w.work, bldBuildTimeout, false, "build", "Cangafile.latest")
	t.Logf("canga build Cangafile.latest took %v", time.Since(t0).Round(time.Second))
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	requireNoPanic(t, r)
	for _, s := range []string{"Copying: ", "context to /", "Running: dpkg -i /context/one-context*deb", "Sparsify in-place operation completed"} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("canga build's output does not show %q, as the README's does\n%s", s, r.stderr)
		}
	}
	childID = strings.TrimSpace(r.stdout)
	built := w.showJSON(childID)
	bldRequireBlobChain(t, w.home, built.Blob, w.showJSON(parentID).Blob)
	// Exported as this user: config.yaml's "~" is this $HOME.
	disk := testkit.Ext4{Raw: w.path("child.raw")}
	w.ok("export", childID, disk.Raw, "-O", "raw")
	if got := testkit.RawDigest(t, disk.Raw).String(); got != childID {
		t.Errorf("sha256sum of the exported child = %s, want its ID %s", got, childID)
	}
	disk.File(t, "/usr/share/one-context/walkthrough", "installed by dpkg from the context directory\n")
	disk.Absent(t, "/context")
	return childID, parentID, listed
}

// walkDeb makes a small Debian package standing in for OpenNebula's
// one-context: dpkg -i in the guest installs its one file.
func walkDeb(t *testing.T, deb string) {
	t.Helper()
	root := t.TempDir()
	// The package's "./" is the guest's /: not the temporary 0700.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bldWrite(t, filepath.Join(root, "usr", "share", "one-context", "walkthrough"), "installed by dpkg from the context directory\n")
	bldWrite(t, filepath.Join(root, "DEBIAN", "control"), `Package: one-context
Version: 5.0.0
Architecture: all
Maintainer: canga tests <tests@example.org>
Description: stand-in for OpenNebula's context package
`)
	testkit.Run(t, "dpkg-deb", "--root-owner-group", "--build", root, deb)
}

// walkCommand is one line of the README's command list.
type walkCommand struct {
	line string
	name string   // "" for the --version line
	args []string // as the README spells them: FILE, [REPO]
}

func walkReadmeCommands(t *testing.T) []walkCommand {
	t.Helper()
	var cmds []walkCommand
	for _, l := range strings.Split(strings.TrimRight(walkCommandList, "\n"), "\n") {
		usage, _, ok := strings.Cut(l, "#")
		f := strings.Fields(usage)
		if !ok || len(f) < 2 || f[0] != "canga" {
			t.Fatalf("command list line %q", l)
		}
		c := walkCommand{line: strings.TrimSpace(l)}
		if !strings.HasPrefix(f[1], "-") {
			c.name, c.args = f[1], f[2:]
		}
		cmds = append(cmds, c)
	}
	return cmds
}

// argShape is "R" for a required argument and "O" for an optional one,
// in order: FILE [REPO] -> "RO"; kong's <FILE> [<REPO>] the same.
func argShape(args []string) string {
	var b strings.Builder
	for _, a := range args {
		switch {
		case a == "[flags]" || a == "...]":
		case strings.HasPrefix(a, "["):
			b.WriteByte('O')
		default:
			b.WriteByte('R')
		}
	}
	return b.String()
}

// TestWalkCommandList runs each line of the README's command list: bare
// where every argument is optional, --help (and help COMMAND) where one
// is required. The help takes the arguments the README shows.
func TestWalkCommandList(t *testing.T) {
	w := newWalker(t)
	w.ok("create", "small.qcow2", "16M")
	testkit.QemuWrite(t, w.path("small.qcow2"), 0x42, 0, 1<<20)
	w.ok("add", "small.qcow2", "--tag", "small")
	w.configTop("allowed_signers", w.signers)
	w.ok("sign")
	w.configRepo("remote", "url", w.serve(), "path", filepath.Join(w.home, "remote"))

	usageLine := regexp.MustCompile(`(?m)^Usage: canga (.*)$`)
	for _, c := range walkReadmeCommands(t) {
		name := c.name
		if name == "" {
			name = "version"
		}
		t.Run(name, func(t *testing.T) {
			t.Logf("README: %s", c.line)
			w.t = t
			if c.name == "" { // --version, -V
				long, short := w.ok("--version"), w.ok("-V")
				if long != short || !strings.HasPrefix(long, "canga "+e2eVersion+"\n") {
					t.Errorf("--version printed %q, -V %q: want the same, canga %s", long, short, e2eVersion)
				}
				return
			}
			help := w.ok(c.name, "--help")
			m := usageLine.FindStringSubmatch(help)
			if m == nil {
				t.Fatalf("%s --help: no usage line\n%s", c.name, help)
			}
			got := strings.Fields(m[1])
			if got[0] != c.name || argShape(got[1:]) != argShape(c.args) {
				t.Errorf("%s --help: usage %q, want the README's arguments %v", c.name, m[1], c.args)
			}
			if h := w.ok("help", c.name); h != help {
				t.Errorf("help %s differs from %s --help:\n%s\n---\n%s", c.name, c.name, h, help)
			}
			if strings.Contains(argShape(c.args), "R") {
				return
			}
			// Every argument optional: the command runs as the README
			// shows it, bare.
			out := w.ok(c.name)
			var wantOut string
			switch c.name {
			case "fetch":
				wantOut = "remote: 1 images, 1 tags"
			case "help":
				wantOut = "Run \"canga <command> --help\""
			case "list":
				wantOut = "  default:small "
			case "sign":
				wantOut = "key " + w.key + ", the default"
			case "verify":
				wantOut = "Good signature of default's index by " + walkPrincipal
			default:
				t.Fatalf("no expectation for a bare %s", c.name)
			}
			if !strings.Contains(out, wantOut) {
				t.Errorf("canga %s printed %q, want %q in it", c.name, out, wantOut)
			}
		})
	}
}

// TestWalkRepoOption: --repo REPO is the optional REPO argument of every
// command that has one; both given and different is a usage error that
// does nothing.
func TestWalkRepoOption(t *testing.T) {
	w := newWalker(t)
	w.ok("create", "a.qcow2", "16M")
	testkit.QemuWrite(t, w.path("a.qcow2"), 0x11, 0, 1<<20)
	w.ok("list") // makes ~/.cangallo
	w.configRepo("other")
	w.configTop("allowed_signers", w.signers)

	// add, list, sign, verify, fsck and gc, the repository by --repo.
	id := strings.TrimSpace(w.ok("add", "a.qcow2", "--repo", "other", "--tag", "a"))
	if out := w.ok("list", "--repo=other"); !strings.Contains(out, "other:a ") || w.ok("list", "other") != out {
		t.Errorf("list --repo=other printed\n%s\nwant other:a, as list other does", out)
	}
	if out := w.ok("list", "--repo", "default"); strings.Contains(out, "other:") {
		t.Errorf("list --repo default shows the other repository\n%s", out)
	}
	if out := w.ok("sign", "--repo", "other"); !strings.Contains(out, filepath.Join(w.home, "other", "index.yaml")) {
		t.Errorf("sign --repo other printed %q", out)
	}
	if out := w.ok("verify", "--repo=other"); !strings.Contains(out, "Good signature of other's index") {
		t.Errorf("verify --repo=other printed %q", out)
	}
	if out := w.ok("fsck", "--repo", "other"); !strings.HasPrefix(out, "1 images, 2 blobs") {
		t.Errorf("fsck --repo other printed %q", out)
	}
	w.ok("gc", "--repo", "other")
	// The same repository both ways is no conflict.
	w.ok("fsck", "other", "--repo", "other")
	if got := strings.TrimSpace(w.ok("import", "a", "--repo", "default")); got != id {
		t.Errorf("import a --repo default printed %q, want %s", got, id)
	}

	// A remote, by --repo: fetch and serve.
	url := w.serve()
	w.configRepo("remote", "url", url, "path", filepath.Join(w.home, "remote"))
	if out := w.ok("fetch", "--repo=remote"); !strings.HasPrefix(out, "remote: 1 images") {
		t.Errorf("fetch --repo=remote printed %q", out)
	}
	for _, args := range [][]string{{"serve", "--repo", "nope"}, {"fetch", "--repo", "other"}} {
		if r := w.fails(args...); !strings.Contains(r.stderr, "nope") && !strings.Contains(r.stderr, "other") {
			t.Errorf("canga %v: %s", args, r.stderr)
		}
	}

	// Both, and different: exit 1, before anything is done.
	before := testkit.ReadFile(t, filepath.Join(w.home, "other", "index.yaml"))
	for _, args := range [][]string{
		{"add", "a.qcow2", "default", "--repo", "other", "--tag", "b"},
		{"list", "default", "--repo", "other"},
		{"fetch", "remote", "--repo=other"},
		{"import", "a", "default", "--repo", "other", "--tag", "c"},
		{"serve", "default", "--repo", "other"},
		{"sign", "other", "--repo", "default"},
		{"verify", "other", "--repo", "default"},
		{"fsck", "other", "--repo", "default"},
		{"gc", "other", "--repo", "default"},
	} {
		r := w.fails(args...)
		if r.code != 1 || !strings.Contains(r.stderr, "--repo") || !strings.Contains(r.stderr, "differ") || r.stdout != "" {
			t.Errorf("canga %v: want a usage error (exit 1) naming --repo, nothing on stdout\n%v", args, r)
		}
	}
	if after := testkit.ReadFile(t, filepath.Join(w.home, "other", "index.yaml")); !bytes.Equal(before, after) {
		t.Errorf("a refused command changed other's index")
	}
	for _, tag := range []string{"b", "c"} {
		if r := w.run("show", tag); r.code == 0 {
			t.Errorf("tag %s exists after a refused command", tag)
		}
	}
}

// walkAgent starts ssh-agent on a socket of its own (ssh-agent -D -a
// SOCK: in the foreground, so that the test stops it) and makes it the
// walker's agent.
func walkAgent(t *testing.T, w *walker) {
	t.Helper()
	testkit.Need(t, "ssh-agent", "ssh-add")
	w.sock = filepath.Join(t.TempDir(), "agent.sock")
	var out testkit.SyncBuffer
	cmd := exec.Command("ssh-agent", "-D", "-a", w.sock)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(w.sock); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh-agent did not create %s:\n%s", w.sock, out.String())
		}
	}
}

// sshAddTo loads key into the walker's agent.
func sshAddTo(t *testing.T, w *walker, key string) {
	t.Helper()
	cmd := exec.Command("ssh-add", key)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + w.user, "SSH_AUTH_SOCK=" + w.sock}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add %s: %v\n%s", key, err, out)
	}
}

// requireSignedBy checks what sign printed, and that ssh-keygen accepts
// the signature as key's.
func (w *walker) requireSignedBy(out, key, says string) {
	w.t.Helper()
	if fp := testkit.Fingerprint(w.t, key+".pub"); !strings.Contains(out, fp) || !strings.Contains(out, says) {
		w.t.Errorf("sign printed %q, want %s's fingerprint %s and %q", out, key, fp, says)
	}
	signers := walkAllowedSigners(w.t, w.t.TempDir(), "signer@example.org", key)
	ix := filepath.Join(repoDir(w.home), "index.yaml")
	if out, ok := testkit.SSHVerify(w.t, signers, "signer@example.org", "canga-index", ix, ix+".sig"); !ok {
		w.t.Errorf("ssh-keygen -Y verify refuses the signature as %s's:\n%s", key, out)
	}
}

// TestWalkSignDefaults: which key canga sign takes without --key, and
// which allowed_signers canga verify takes without --allowed-signers, in
// the order --help gives.
func TestWalkSignDefaults(t *testing.T) {
	w := newWalker(t)
	w.ok("create", "a.qcow2", "16M")
	w.ok("add", "a.qcow2", "--tag", "a")
	keys := t.TempDir()

	// signing_key in config.yaml comes before ~/.ssh; --key before both.
	configured := testkit.Keygen(t, keys, "configured", "", "-t", "ecdsa", "-b", "256")
	w.configTop("signing_key", configured)
	w.requireSignedBy(w.ok("sign"), configured, "key "+configured+", signing_key of config.yaml")
	given := testkit.Keygen(t, keys, "given", "", "-t", "ed25519")
	w.requireSignedBy(w.ok("sign", "--key", given), given, "key "+given+")")
	w.configTop("signing_key", filepath.Join(keys, "missing"))
	if r := w.fails("sign"); !strings.Contains(r.stderr, "signing_key of "+filepath.Join(w.home, "config.yaml")) {
		t.Errorf("a signing_key that is missing: %s", r.stderr)
	}
	w.configTop("signing_key", "")

	// The only key ssh-agent holds comes before ~/.ssh/id_ed25519.
	walkAgent(t, w)
	w.requireSignedBy(w.ok("sign"), w.key, "the default") // an empty agent: ~/.ssh
	only := testkit.Keygen(t, keys, "agent-only", "", "-t", "ed25519")
	sshAddTo(t, w, only)
	if err := os.Remove(only); err != nil { // only the agent can sign with it now
		t.Fatal(err)
	}
	w.requireSignedBy(w.ok("sign"), only, `ssh-agent's only key, "agent-only"`)

	// Several agent keys: no guess; ~/.ssh/id_ed25519 signs.
	second := testkit.Keygen(t, keys, "agent-second", "", "-t", "ed25519")
	sshAddTo(t, w, second)
	w.requireSignedBy(w.ok("sign"), w.key, "key "+w.key+", the default")

	// ... and without it, id_ecdsa, then id_rsa.
	for _, f := range []string{w.key, w.key + ".pub"} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	rsa := testkit.Keygen(t, w.ssh, "id_rsa", "", "-t", "rsa", "-b", "3072")
	w.requireSignedBy(w.ok("sign"), rsa, "key "+rsa+", the default")
	ecdsa := testkit.Keygen(t, w.ssh, "id_ecdsa", "", "-t", "ecdsa", "-b", "256")
	w.requireSignedBy(w.ok("sign"), ecdsa, "key "+ecdsa+", the default")

	// Nothing to choose without guessing: say what to configure, and
	// leave the signature as it was.
	for _, f := range []string{rsa, ecdsa} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	sig := filepath.Join(repoDir(w.home), "index.yaml.sig")
	before := testkit.ReadFile(t, sig)
	r := w.fails("sign")
	for _, s := range []string{"ssh-agent holds 2 keys", "agent-only", "agent-second", filepath.Join(w.ssh, "id_ed25519"),
		"--key FILE", "signing_key: FILE in " + filepath.Join(w.home, "config.yaml")} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("sign with several agent keys and no ~/.ssh key says\n%s\nwant %q in it", r.stderr, s)
		}
	}
	if after := testkit.ReadFile(t, sig); !bytes.Equal(before, after) {
		t.Error("a failed sign changed index.yaml.sig")
	}

	// verify: --allowed-signers, else the repository's entry in
	// config.yaml, else its top level; the output says which file.
	w.sock = ""
	w.ok("sign", "--key", given)
	if r := w.fails("verify"); !strings.Contains(r.stderr, "allowed_signers: FILE in "+filepath.Join(w.home, "config.yaml")) {
		t.Errorf("verify with no allowed_signers anywhere says\n%s\nwant what to configure", r.stderr)
	}
	dir := t.TempDir()
	top := walkAllowedSigners(t, dir, "top@example.org", given)
	entry := walkAllowedSigners(t, dir, "entry@example.org", given)
	flag := walkAllowedSigners(t, dir, "flag@example.org", given)
	w.configTop("allowed_signers", top)
	if out := w.ok("verify"); !strings.Contains(out, "by top@example.org") || !strings.Contains(out, top) {
		t.Errorf("verify with the top-level allowed_signers printed %q", out)
	}
	file := filepath.Join(w.home, "config.yaml")
	conf := string(testkit.ReadFile(t, file))
	const defaultPath = "    path: ~/.cangallo/default\n"
	if !strings.Contains(conf, defaultPath) {
		t.Fatalf("config.yaml has no %q\n%s", defaultPath, conf)
	}
	testkit.WriteFile(t, file, []byte(strings.Replace(conf, defaultPath, defaultPath+"    allowed_signers: "+entry+"\n", 1)), 0o644)
	if out := w.ok("verify"); !strings.Contains(out, "by entry@example.org") || !strings.Contains(out, entry) {
		t.Errorf("verify with the repository's allowed_signers printed %q", out)
	}
	if out := w.ok("verify", "--allowed-signers", flag); !strings.Contains(out, "by flag@example.org") || !strings.Contains(out, flag) {
		t.Errorf("verify --allowed-signers printed %q", out)
	}
}
