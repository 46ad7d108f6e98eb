// Package index implements the catalog side of a canga repository:
//
//   - index.yaml (SPEC §2): [Parse] and [Index.Marshal] for version 1, and
//     read-only compatibility with Cangallo's version 0 index;
//   - the image graph held by an index: parents, chains, children, tags;
//   - names (SPEC §4): [Index.Lookup] inside one repository and [Resolve]
//     across repositories given in search order (package config lists
//     them, package repo opens them).
//
// The package never touches blobs and takes no repository lock: the caller
// loads and saves index.yaml under the lock of package cas, and uses this
// package for bytes in, bytes out and in-memory edits.
//
// An index may come from a remote repository, so [Parse] treats its input as
// hostile: every image ID, blob digest, parent and tag target must be exactly
// "sha256:" followed by 64 lowercase hex digits (bare hex in version 0),
// every tag must pass [ValidateTag], every parent must be in the index and
// parent chains must not loop. A document that fails any of these is
// rejected as a whole with a [*ParseError] naming the line and key.
//
// Decisions where the SPEC is silent:
//
//   - A parent that is not in the index ("dangling parent") is an error: an
//     index is always closed under ancestry, which is what pull, import and
//     del rely on.
//   - Two images may not share a blob: deleting one would delete the
//     other's file, and the blob bytes name the parent, so it cannot happen
//     in a sound repository.
//   - Unknown keys of an image entry and of the top level are kept and
//     written back, sorted, after the known keys: a newer canga may add
//     keys without breaking an older one.
//   - Marshal always writes version 1 and refuses entries without a blob
//     digest (Cangallo entries): a version 0 index is only ever read; its
//     images get a blob digest when they are pulled into a local
//     repository.
//   - Tags are lowercase; see [ValidateTag] for why all-hex tags are
//     refused. Cangallo tags with uppercase letters are rejected too.
//   - Required in a version 1 entry: blob, blob-size (> 0), virtual-size.
//     cluster-size, compression, created, description, os, cangafile,
//     chunks and chunk-size are optional and left out when empty; chunks
//     and chunk-size come together (a sha256 digest, and a power of two
//     from 64 KiB to 64 MiB). created is RFC 3339, kept in
//     UTC. Sizes are plain decimal integers; "10", 0x10 or 1e3 are
//     refused, so a size means one thing to every reader.
//   - A document without a version key is read as Cangallo's only when it
//     has nothing but images (keyed by bare hex) and tags; otherwise it is
//     "missing version". Any version other than 0 and 1 is
//     [ErrUnsupportedVersion]. Cangallo's SHA-1 indexes are refused.
//   - Aliases are expanded and anchors, comments and styles dropped in
//     the values kept as YAML (cangafile, unknown keys), with a node
//     budget against alias bombs; a document must be a single YAML
//     document with unique keys.
//   - [Index.Marshal] writes one canonical layout (canonical.go), the
//     bytes yaml.v3's encoder writes for the index, and writes them
//     itself; [Parse] and [Decode] read that layout line by line and
//     fall back to the YAML node parser for anything else (comments,
//     another key order, Cangallo indexes, errors). Every index.yaml
//     canga wrote takes the fast path: for 100,000 images a quarter of a
//     second and 80 MB allocated instead of three seconds and 780 MB
//     (bench/RESULTS.md). The fast path accepts only what the general
//     parser accepts, to the same index, and declines rather than
//     refuses: errors are always the general parser's (FuzzCanonical).
//
// Names (see [Resolve]): per repository, in search order, a tag, then a
// full ID, then a unique prefix; the first repository that resolves the
// name wins. "REPO:NAME" for a configured REPO falls back to the whole
// string as a name when REPO does not have NAME.
package index
