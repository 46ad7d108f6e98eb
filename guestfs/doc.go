// Package guestfs reads Cangafiles and applies them to a disk image with the
// libguestfs tools. It implements SPEC.md section 7 (Cangafile (YAML)) and the
// older Cangafile form of the seed README (top-level `files:` and `run:`).
//
// The package knows nothing about repositories: the caller resolves `parent`,
// makes the qcow2 overlay, and stores the result. This package only
//
//   - parses a Cangafile strictly ([Parse], [ParseFile]): every unknown key,
//     wrong type, missing field, missing copy source or bad regexp is reported
//     with its line and key path before anything runs;
//   - renders the tasks to a virt-customize(1) `--commands-from-file` file
//     ([Plan.Commands]), escaping every argument so that nothing in a
//     Cangafile can start a second command;
//   - runs `virt-customize` and then `virt-sparsify --in-place` on the overlay
//     ([Run]), streaming the tools' output lines to a callback.
//
// # The commands-file syntax, and how arguments are escaped
//
// virt-customize (guestfs-tools 1.48, common/mlcustomize) reads the file like
// this: a backslash immediately before a newline is replaced by a newline and
// the logical line continues; every other backslash is kept as is; leading
// blanks of a logical line are dropped; empty lines and lines starting with
// `#` are skipped; the text up to the first space names the command and the
// rest, verbatim, is its single argument. So an argument containing a
// newline is written with a backslash before that newline, and nothing else
// needs escaping. An argument that ends with a backslash cannot be written at
// all (the backslash would join the next line): such a copy or path is an
// error; a run command ending with an even number of backslashes gets a
// trailing space (the shell reads the same command), an odd number is an
// error in a list item and a line continuation in a `run: |` block.
//
// # Task semantics
//
//   - copy "SRC DEST" or {src, dest}: `mkdir DEST` then `copy-in SRC:DEST`.
//     SRC is a host path relative to the Cangafile's directory (absolute and
//     `..` paths are allowed) and must exist when the Cangafile is parsed; it
//     is copied recursively into the guest directory DEST (created if
//     missing) under its own base name. virt-customize splits "SRC:DEST" at
//     the first colon, so SRC must not contain ':'.
//   - run: a multi-line string is one command per non-empty line (lines whose
//     first non-blank character is `#` are skipped; a line ending with an odd
//     number of backslashes continues on the next line, as in sh); a list is
//     one command per item, and an item may be a multi-line script that runs
//     as one command. Each command is a `run-command`: /bin/sh in the guest.
//   - change {file, regexp, text}: every match of regexp in each line of the
//     guest file is replaced by text, taken literally (no `$1`, `&` or `\1`
//     expansion). It is virt-customize's `edit FILE:EXPR`, which evaluates a
//     Perl expression for each line (the line includes its newline) on the
//     host. The regexp and text are not spliced into Perl source: they are
//     hex-encoded and decoded at run time, and an interpolated pattern cannot
//     run code (Perl refuses `(?{...})` from a variable), so no Cangafile can
//     run Perl code on the host. The regexp must compile as Go regexp syntax
//     and is run by Perl; use the common subset (Go-only syntax such as `(?U)`
//     fails at run time). UTF-8 lines are matched as characters.
//   - delete PATH: `delete`, which deletes recursively and expands shell
//     globs in PATH.
//   - password {user, password} or {user, disabled: true}: virt-customize
//     `password USER:file:F`, the password being written to a private
//     temporary file so that it never appears in the commands file or in
//     [DryRun]. virt-customize sets all passwords after every other task, and
//     silently skips unknown users, so the plan ends with a check that each
//     named user exists in the guest's /etc/shadow.
//
// The older form's top-level `files:` (copies) and `run:` (commands) run
// before `tasks:`, files first.
package guestfs
