package main

// Man pages, written from kong's model of the command line, so that every
// command and flag is in them (make man; a test checks). canga.1 is the
// overview; canga-COMMAND.1 describes one command.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
)

type manCmd struct {
	Dir string `arg:"" name:"DIR" help:"Directory to write canga.1 and canga-COMMAND.1 into."`
}

func (c *manCmd) Run(kctx *kong.Context) error {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	date, err := manDate()
	if err != nil {
		return err
	}
	pages := manPages(kctx.Model, date)
	for name, text := range pages {
		if err := os.WriteFile(filepath.Join(c.Dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// manDate is the date the pages carry: SOURCE_DATE_EPOCH's when set (a
// release is reproducible), else today.
func manDate() (string, error) {
	t := time.Now()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return "", fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		t = time.Unix(n, 0)
	}
	return t.UTC().Format("2006-01-02"), nil
}

// manPages returns the pages by file name.
func manPages(app *kong.Application, date string) map[string]string {
	pages := map[string]string{"canga.1": mainPage(app, date)}
	for _, n := range manCommands(app) {
		pages["canga-"+n.Name+".1"] = commandPage(app, n, date)
	}
	return pages
}

// manCommands are the commands that get a page: every one but the hidden.
func manCommands(app *kong.Application) []*kong.Node {
	var out []*kong.Node
	for _, n := range app.Children {
		if n.Type == kong.CommandNode && !n.Hidden {
			out = append(out, n)
		}
	}
	return out
}

// roff escapes text for a man page: backslashes, and a dot or quote that
// would start a request at the beginning of a line.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}

func th(w *strings.Builder, name, date string) {
	fmt.Fprintf(w, ".TH %s 1 %q %q \"canga manual\"\n", strings.ToUpper(name), date, "canga "+version)
}

// detail writes a help text: paragraphs as paragraphs, indented lines as
// they are.
func detail(w *strings.Builder, text string) {
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if strings.HasPrefix(para, " ") || strings.Contains(para, "\n ") || strings.Contains(para, "\n1.") {
			fmt.Fprintf(w, ".PP\n.nf\n%s\n.fi\n", roff(para))
			continue
		}
		fmt.Fprintf(w, ".PP\n%s\n", roff(para))
	}
}

func flagLine(f *kong.Flag) string {
	s := `\fB\-\-` + roff(f.Name) + `\fR`
	if f.Short != 0 {
		s = `\fB\-` + string(f.Short) + `\fR, ` + s
	}
	if !f.IsBool() && !f.IsCounter() {
		s += `=\fI` + roff(f.FormatPlaceHolder()) + `\fR`
	}
	return s
}

func writeFlags(w *strings.Builder, flags []*kong.Flag) {
	for _, f := range flags {
		if f.Hidden {
			continue
		}
		help := f.Help
		if f.Enum != "" {
			var vals []string
			for _, v := range f.EnumSlice() {
				if v != "" {
					vals = append(vals, v)
				}
			}
			help += " One of: " + strings.Join(vals, ", ") + "."
		}
		if f.HasDefault && f.Default != "" {
			help += " Default: " + f.Default + "."
		}
		if len(f.Envs) > 0 {
			help += " Environment: " + strings.Join(f.Envs, ", ") + "."
		}
		fmt.Fprintf(w, ".TP\n%s\n%s\n", flagLine(f), roff(help))
	}
}

func globalFlags(app *kong.Application) []*kong.Flag {
	return app.Flags
}

func mainPage(app *kong.Application, date string) string {
	var w strings.Builder
	th(&w, "canga", date)
	w.WriteString(`.SH NAME
canga \- keep qcow2 disk images in a content\-addressed repository
.SH SYNOPSIS
.B canga
[\fIGLOBAL OPTIONS\fR] \fICOMMAND\fR [\fIARGUMENTS\fR] [\fIOPTIONS\fR]
.SH DESCRIPTION
canga keeps qcow2 virtual\-machine disk images in a content\-addressed
repository, the way Docker keeps layers, at block level: a derived image is
stored as a compressed qcow2 delta whose backing file is its parent.
.PP
An image has two names. Its \fBimage ID\fR is the SHA\-256 of its whole
guest\-visible content (what \fBqemu\-img convert \-O raw\fR writes), whatever
the compression or layout. Its \fBblob digest\fR is the SHA\-256 of the stored
qcow2 file, which every download is checked against while it streams.
An \fIIMAGE\fR argument is a tag (\fBdebian:12\fR), a full image ID, a unique
prefix of at least 4 hex digits, or any of these as \fIREPO\fR:\fINAME\fR.
.PP
A repository is a plain directory (index.yaml, blobs/sha256/) that any web
server can serve; OCI registries hold images as artifacts
(\fBoci://\fR\fIHOST\fR/\fINAME\fR:\fITAG\fR).
.PP
Each command has its own page, \fBcanga\-\fR\fICOMMAND\fR(1), and its own
\fB\-\-help\fR; the user's guide and the format references are in
/usr/share/doc/canga (docs/ in the source).
.SH COMMANDS
`)
	group := ""
	for _, n := range manCommands(app) {
		g := "Help and completion"
		if n.Group != nil {
			g = n.Group.Title
		}
		if g != group {
			fmt.Fprintf(&w, ".SS %s\n", roff(g))
			group = g
		}
		fmt.Fprintf(&w, ".TP\n\\fBcanga %s\\fR %s\n%s See \\fBcanga\\-%s\\fR(1).\n", roff(n.Name), synopsisArgs(n), roff(n.Help), roff(n.Name))
	}
	w.WriteString(".SH GLOBAL OPTIONS\n")
	writeFlags(&w, globalFlags(app))
	w.WriteString(`.SH ENVIRONMENT
.TP
.B CANGA_HOME
The home directory (config.yaml, the default repository); \fB\-\-home\fR
overrides it; default ~/.cangallo.
.TP
.B DOCKER_CONFIG
Where Docker's config.json (registry credentials) is; default ~/.docker.
.TP
.B SSH_AUTH_SOCK
The ssh\-agent that \fBsign\fR and \fBpush \-\-sign\fR may use.
.SH FILES
.TP
.I ~/.cangallo/config.yaml
The repositories, the default one, and the signing defaults.
.TP
.I REPO/index.yaml
A repository's catalog; \fIREPO\fR/index.yaml.sig its SSH signature.
.TP
.I REPO/blobs/sha256/HEX
One qcow2 file per image, named by its blob digest.
.SH EXIT STATUS
0 when the command did what it was asked; 1 on any error, a usage error
included (as \fBqemu\-img\fR). Only \fBcanga check\fR uses more: 2 when the
image is corrupt, 3 when it only leaks clusters, 63 when the file is not a
qcow2 image.
.SH SEE ALSO
`)
	var see []string
	for _, n := range manCommands(app) {
		see = append(see, `\fBcanga\-`+roff(n.Name)+`\fR(1)`)
	}
	see = append(see, `\fBqemu\-img\fR(1)`, `\fBvirt\-customize\fR(1)`, `\fBssh\-keygen\fR(1)`)
	w.WriteString(strings.Join(see, ",\n") + "\n")
	return w.String()
}

// synopsisArgs is a command's positional arguments, as in its usage line.
func synopsisArgs(n *kong.Node) string {
	var parts []string
	for _, p := range n.Positional {
		s := `\fI` + roff(p.Name) + `\fR`
		if p.IsCumulative() {
			s += "..."
		}
		if !p.Required {
			s = "[" + s + "]"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func commandPage(app *kong.Application, n *kong.Node, date string) string {
	var w strings.Builder
	th(&w, "canga-"+n.Name, date)
	fmt.Fprintf(&w, ".SH NAME\ncanga\\-%s \\- %s\n", roff(n.Name), roff(strings.TrimSuffix(n.Help, ".")))
	fmt.Fprintf(&w, ".SH SYNOPSIS\n.B canga %s\n%s", roff(n.Name), synopsisArgs(n))
	if len(n.Flags) > 0 {
		w.WriteString(" [\\fIOPTIONS\\fR]")
	}
	w.WriteString("\n.SH DESCRIPTION\n")
	fmt.Fprintf(&w, "%s\n", roff(n.Help))
	if n.Detail != "" {
		detail(&w, n.Detail)
	}
	if len(n.Positional) > 0 {
		w.WriteString(".SH ARGUMENTS\n")
		for _, p := range n.Positional {
			help := p.Help
			if p.Enum != "" {
				help += " One of: " + strings.Join(p.EnumSlice(), ", ") + "."
			}
			fmt.Fprintf(&w, ".TP\n\\fI%s\\fR\n%s\n", roff(p.Name), roff(help))
		}
	}
	if len(n.Flags) > 0 {
		w.WriteString(".SH OPTIONS\n")
		writeFlags(&w, n.Flags)
	}
	w.WriteString(".SH GLOBAL OPTIONS\n")
	writeFlags(&w, globalFlags(app))
	w.WriteString(".SH EXIT STATUS\n")
	if n.Name == "check" {
		w.WriteString("0 clean; 1 the check could not be done, or found errors it could not classify; 2 corruptions found; 3 only leaked clusters found; 63 the file is not qcow2 (raw has no checks). These are \\fBqemu\\-img check\\fR's.\n")
	} else {
		w.WriteString("0 done, 1 on any error (a usage error too).\n")
	}
	w.WriteString(".SH SEE ALSO\n\\fBcanga\\fR(1), /usr/share/doc/canga\n")
	return w.String()
}
