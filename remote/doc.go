// Package remote is canga's HTTP transport: it fetches the index of a
// remote repository, pulls blobs from it, and serves a repository
// (SPEC §2 "A repository is a directory", §5 fetch, pull and serve, §6
// signatures).
//
// A remote is nothing but a repository directory behind a static web
// server (python3 -m http.server, nginx, an object store, [Handler]):
// GET of BASE/index.yaml, BASE/index.yaml.sig and BASE/blobs/sha256/HEX,
// with Range support where the server has it. A Cangallo (version 0)
// repository is read too: its images are BASE/HEX.qcow2, named by image
// ID.
//
// # Fetch
//
// [Client.FetchIndex] returns the bytes of index.yaml (at most
// index.MaxIndexSize) and of its signature (at most 64 KiB, nil when the
// server has none) exactly as served. [ValidateIndex] checks them: with
// allowed signers the signature must verify (before the index is even
// parsed), and the index must parse. Only then does [SaveIndex] store
// them, byte for byte, in the remote's local cache (a repository
// directory): the signature first, index.yaml last, so that index.yaml is
// the commit point. A failed fetch leaves the previous index and
// signature as they were. [ReadIndex] verifies again on every read, so a
// cache that a crash left with a mismatched pair, or that someone edited,
// is refused rather than trusted.
//
// # Pull
//
// [Client.PullBlob] streams a blob into a cas.Partial: the digest is
// checked while the bytes arrive, an interrupted transfer resumes with
// "Range: bytes=N-" (in this process, or in the next one, from the
// partial file cas keeps), a server that ignores Range (200) restarts it,
// and transient failures (connection errors, 408, 429, 5xx, a body cut
// short, a transfer that stalls) are retried with exponential back-off
// and jitter. The blob's header is checked ([CheckPulledHeader]) as soon
// as its first cluster has arrived, before the blob can be stored: its
// backing file must be exactly its parent's blob HEX, in format qcow2, and
// a base must have none. A remote can thus never make canga or qemu open
// a file of the host ("/etc/shadow", "../x", "json:{...}").
//
// A Cangallo image has no blob digest. It is downloaded into a temp file,
// its header is checked (backing file PARENTHEX.qcow2), and its image ID
// is computed over the chain of its ancestors' files and the new file
// (opened explicitly, not through the names in their headers); only a
// match is kept, as CACHE/HEX.qcow2 beside index.yaml, the layout of a
// Cangallo repository, in which those backing names resolve. So its
// ancestors must be there first: [Client.PullChain] downloads a chain in
// parallel but verifies Cangallo images base first.
//
// [Client.PullChain] pulls a chain with bounded parallelism
// (Client.Parallel, 4 by default) and reports progress over all blobs at
// once.
//
// # Serve
//
// [Handler] serves exactly the three kinds of files above, for GET and
// HEAD, with Range, ETag and Last-Modified; nothing else, not through
// "..", encodings or symbolic links. [Serve] runs it until its context
// ends.
package remote
