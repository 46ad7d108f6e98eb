package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// PlanChain returns the items to pull for image id of idx (the index of
// the remote): its chain, base first.
func PlanChain(idx *index.Index, id digest.Digest) ([]Item, error) {
	chain, err := idx.Chain(id)
	if err != nil {
		return nil, fmt.Errorf("remote: plan pull of %s: %w", index.ShortID(id), err)
	}
	slices.Reverse(chain)
	items := make([]Item, len(chain))
	for i, cid := range chain {
		e := idx.Images[cid]
		it := Item{ImageID: cid, Parent: e.Parent, Expect: Expect{VirtualSize: e.VirtualSize}}
		var parent *index.Entry
		if e.Parent != "" {
			if parent = idx.Images[e.Parent]; parent == nil {
				return nil, fmt.Errorf("remote: plan pull of %s: parent %s missing", index.ShortID(cid), e.Parent)
			}
		}
		switch {
		case e.Legacy != nil:
			it.Legacy = true
			it.Path = index.LegacyFileName(cid)
			it.Size = -1
			it.Ancestors = append([]digest.Digest(nil), chain[:i]...)
			it.Expect.Legacy = true
			if parent != nil {
				it.Expect.Backing = index.LegacyFileName(e.Parent)
			}
		case e.Blob != "":
			if err := cas.ValidateDigest(e.Blob); err != nil {
				return nil, fmt.Errorf("remote: plan pull of %s: %w", index.ShortID(cid), err)
			}
			it.Path = "blobs/sha256/" + e.Blob.Encoded()
			it.Blob = e.Blob
			it.Size = e.BlobSize
			if parent != nil {
				if parent.Blob == "" {
					return nil, fmt.Errorf("remote: plan pull of %s: parent %s has no blob digest", index.ShortID(cid), e.Parent)
				}
				it.Expect.Backing = parent.Blob.Encoded()
			}
		default:
			return nil, fmt.Errorf("remote: plan pull of %s: no blob digest", index.ShortID(cid))
		}
		items[i] = it
	}
	return items, nil
}

// PullChain pulls the blobs of items, a chain base first as [PlanChain]
// makes it, into store, at most Client.Parallel at a time, and returns
// what was stored in the same order. Blobs the store has are checked, not
// downloaded. Cangallo images are downloaded in parallel too, but each is
// verified and kept only after its parent, since its image ID covers the
// parent's content.
//
// progress, if not nil, hears the bytes downloaded so far and the total
// to download, over all blobs, so that one bar can show the whole pull.
// It is called with a lock held, from several goroutines, and must be
// quick. total can grow while a pull runs (a Cangallo image's size is
// learned from the server) and done can shrink (a server ignoring a Range
// request sends a blob again).
//
// A failure stops the other downloads; what was stored before it stays
// (it is verified) and partial downloads are kept for the next attempt.
//
// Blobs are published without the repository lock: the cached index of a
// remote already references them, so a concurrent gc keeps them.
func (c *Client) PullChain(ctx context.Context, store *cas.Store, baseURL string, items []Item, progress func(done, total int64)) ([]cas.BlobInfo, error) {
	for i, it := range items {
		want := digest.Digest("")
		if i > 0 {
			want = items[i-1].ImageID
		}
		if it.Parent != want {
			return nil, fmt.Errorf("remote: pull chain: item %d (%s) has parent %q, not the item before it", i, index.ShortID(it.ImageID), it.Parent)
		}
	}
	results := make([]cas.BlobInfo, len(items))
	present := make([]bool, len(items))
	m := &meter{fn: progress, per: make([]int64, len(items))}
	for i, it := range items {
		if it.Legacy {
			info, ok, err := existingLegacy(store, it)
			if err != nil {
				return nil, pullError(it, baseURL, err)
			}
			results[i], present[i] = info, ok
			continue
		}
		has, err := store.Has(it.Blob)
		if err != nil {
			return nil, pullError(it, baseURL, err)
		}
		if has {
			info, err := existing(store, it.Blob, it.Expect)
			if err != nil {
				return nil, pullError(it, baseURL, err)
			}
			results[i], present[i] = info, true
		} else if it.Size > 0 {
			m.total += it.Size
		}
	}
	m.report()

	done := make([]chan struct{}, len(items))
	for i := range done {
		done[i] = make(chan struct{})
	}
	sem := make(chan struct{}, c.parallel())
	g, gctx := errgroup.WithContext(ctx)
	for i, it := range items {
		if present[i] {
			close(done[i])
			continue
		}
		g.Go(func() error {
			select {
			case sem <- struct{}{}:
			case <-gctx.Done():
				return gctx.Err()
			}
			if !it.Legacy {
				info, err := c.PullBlob(gctx, store, baseURL, it, m.item(i))
				<-sem
				if err != nil {
					return err
				}
				results[i] = info
				close(done[i])
				return nil
			}
			u, err := resolve(baseURL, it.Path)
			if err != nil {
				<-sem
				return pullError(it, baseURL, err)
			}
			tf, size, err := c.downloadTemp(gctx, store, u, it, m.item(i), m.addTotal)
			<-sem
			if err != nil {
				return pullError(it, u, err)
			}
			defer tf.Discard()
			if i > 0 {
				select {
				case <-done[i-1]:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			info, err := finishLegacy(gctx, store, u, it, tf, size)
			if err != nil {
				return pullError(it, u, err)
			}
			results[i] = info
			close(done[i])
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, firstCause(err, ctx)
	}
	return results, nil
}

// firstCause prefers the caller's cancellation to the errors it caused.
func firstCause(err error, ctx context.Context) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return errors.Join(ctx.Err(), err)
	}
	return err
}

// PullImage pulls image id of idx, the index of the remote at baseURL,
// and its ancestors into store ([PlanChain], then [Client.PullChain]), and
// returns what was stored for each image of the chain, by image ID.
func (c *Client) PullImage(ctx context.Context, store *cas.Store, baseURL string, idx *index.Index, id digest.Digest, progress func(done, total int64)) (map[digest.Digest]cas.BlobInfo, error) {
	items, err := PlanChain(idx, id)
	if err != nil {
		return nil, err
	}
	infos, err := c.PullChain(ctx, store, baseURL, items, progress)
	if err != nil {
		return nil, err
	}
	out := make(map[digest.Digest]cas.BlobInfo, len(items))
	for i, it := range items {
		out[it.ImageID] = infos[i]
	}
	return out, nil
}

// meter adds up the progress of parallel downloads.
type meter struct {
	mu          sync.Mutex
	fn          func(done, total int64)
	done, total int64
	per         []int64
}

func (m *meter) report() {
	if m.fn != nil {
		m.fn(m.done, m.total)
	}
}

func (m *meter) item(i int) func(int64) {
	return func(n int64) {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.done += n - m.per[i]
		m.per[i] = n
		m.report()
	}
}

func (m *meter) addTotal(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.total += n
	m.report()
}
