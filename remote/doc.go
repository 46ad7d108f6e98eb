// Package remote is canga's HTTP transport: it moves the bytes of a static
// repository (SPEC §2, "A repository is a directory") and serves one. It
// knows the repository's file names and nothing of what the files mean:
// hashing, verifying, parsing and storing are package repo's, through
// cas and index.
//
// A remote is nothing but a repository directory behind a static web
// server (python3 -m http.server, nginx, an object store, [Handler]):
// GET of BASE/index.yaml, BASE/index.yaml.sig and BASE/blobs/sha256/HEX,
// with Range support where the server has it (a Cangallo repository has
// BASE/HEX.qcow2 files instead of blobs).
//
// [Client.Get] downloads a small file whole (the index, its signature),
// with a bound on its size; [Client.GetIf] and [Client.GetIfTo] do it
// conditionally on the validators (ETag, Last-Modified) of the copy the
// caller has, and report 304 Not Modified. [Client.Open] streams a file from an offset,
// surviving the network: transient failures (connection errors, 408, 429,
// 5xx, a body cut short, a transfer that stalls) are retried with
// exponential back-off and jitter, each time from the byte where the last
// attempt stopped ("Range: bytes=N-"); a server that ignores Range (200)
// has the bytes before the offset skipped; a server that says or sends
// another length than the file's is refused. A caller that keeps what it
// read (cas keeps partial downloads) resumes across processes by opening
// at the offset it has.
//
// [Handler] serves exactly the three kinds of files above, for GET and
// HEAD, with Range, ETag and Last-Modified; nothing else, not through
// "..", encodings or symbolic links. [Serve] runs it until its context
// ends.
package remote
