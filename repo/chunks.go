package repo

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/opencontainers/go-digest"
)

// chunkSizeOf is the chunk size of entry e's chunk list, or the default
// for a blob that has none yet.
func chunkSizeOf(e *index.Entry) int64 {
	if e != nil && e.ChunkSize != 0 {
		return e.ChunkSize
	}
	return DefaultChunkSize
}

// setChunks stores the chunk list that a write computed for its blob
// (info.Chunks, in chunks of size) as a blob of its own and records it in
// e. want, when not empty, is the chunks digest a source's index gave:
// the blob's bytes were checked against their digest, so a list that
// differs means the source's index is wrong, and the blob is refused
// rather than stored with a chunk list nobody could use.
func (r *Repo) setChunks(ctx context.Context, e *index.Entry, info cas.BlobInfo, size int64, want digest.Digest) error {
	if err := cas.CheckChunkList(info.Chunks, info.Size, size); err != nil {
		return fmt.Errorf("%w: chunk list of %s: %v", ErrInternal, info.Digest, err)
	}
	d := digest.FromBytes(info.Chunks)
	if want != "" && d != want {
		return fmt.Errorf("%w: blob %s: the index gives chunk list %s, its bytes make %s", ErrRefused, info.Digest, want, d)
	}
	if _, err := r.store.Ingest(ctx, bytes.NewReader(info.Chunks), d, int64(len(info.Chunks)), nil); err != nil {
		return fmt.Errorf("store the chunk list of %s: %w", info.Digest, err)
	}
	e.Chunks, e.ChunkSize = d, size
	return nil
}

// storedChunkList reads the chunk list of entry e from the store, checked
// against its digest and its blob's size; ok is false when the store does
// not have it.
func (r *Repo) storedChunkList(e *index.Entry) (list []byte, ok bool, err error) {
	if e.Chunks == "" {
		return nil, false, nil
	}
	size, err := cas.ChunkListSize(e.BlobSize, e.ChunkSize)
	if err != nil {
		return nil, false, fmt.Errorf("chunk list %s: %w", e.Chunks, err)
	}
	has, err := r.store.Has(e.Chunks)
	if err != nil || !has {
		return nil, false, err
	}
	f, err := r.store.Open(e.Chunks)
	if err != nil {
		return nil, false, err
	}
	defer f.Close() // read-only
	list, err = io.ReadAll(io.LimitReader(f, size+1))
	if err != nil {
		return nil, false, err
	}
	if err := checkChunkListBytes(e, list); err != nil {
		return nil, false, err
	}
	return list, true, nil
}

// checkChunkListBytes checks list, read as the chunk list of entry e,
// against its digest and against its blob's size.
func checkChunkListBytes(e *index.Entry, list []byte) error {
	if d := digest.FromBytes(list); d != e.Chunks {
		return fmt.Errorf("chunk list %s: its bytes hash to %s (%w)", e.Chunks, d, cas.ErrDigestMismatch)
	}
	if err := cas.CheckChunkList(list, e.BlobSize, e.ChunkSize); err != nil {
		return fmt.Errorf("chunk list %s: %w", e.Chunks, err)
	}
	return nil
}
