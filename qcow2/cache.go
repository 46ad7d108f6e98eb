package qcow2

import (
	"container/list"
	"sync"

	"github.com/cangallo/canga/internal/panics"
)

// cache is a bounded LRU of immutable byte slices (L2 tables, decompressed
// clusters), safe for concurrent use. Concurrent misses of one key load it
// once; the others wait for that load. Failed loads are not kept.
type cache struct {
	mu       sync.Mutex
	maxBytes int64
	minItems int
	bytes    int64
	items    map[cacheKey]*list.Element
	lru      list.List // front = most recently used; values are *cacheItem
}

// cacheKey names a slice: the image it belongs to (caches may be shared by
// a backing chain) and an offset or descriptor within it.
type cacheKey struct {
	owner *Image
	key   uint64
}

type cacheItem struct {
	key  cacheKey
	data []byte
	err  error
	done chan struct{}
}

// newCache returns a cache that keeps at most maxBytes, but always at least
// minItems slices so that a walk over one table never thrashes.
func newCache(maxBytes int64, minItems int) *cache {
	return &cache{maxBytes: maxBytes, minItems: minItems, items: map[cacheKey]*list.Element{}}
}

// get returns the slice for key, calling load on a miss.
func (c *cache) get(key cacheKey, load func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.lru.MoveToFront(el)
		it := el.Value.(*cacheItem)
		c.mu.Unlock()
		<-it.done
		return it.data, it.err
	}
	it := &cacheItem{key: key, done: make(chan struct{})}
	c.items[key] = c.lru.PushFront(it)
	c.mu.Unlock()

	it.data, it.err = safeLoad(load)
	close(it.done)

	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok || el.Value.(*cacheItem) != it {
		return it.data, it.err // evicted while loading
	}
	if it.err != nil {
		c.lru.Remove(el)
		delete(c.items, key)
		return nil, it.err
	}
	c.bytes += int64(len(it.data))
	c.evict()
	return it.data, nil
}

// safeLoad calls load and turns a panic into an error: a load that never
// ended would leave every reader of its key waiting forever.
func safeLoad(load func() ([]byte, error)) (data []byte, err error) {
	defer panics.Recover(&err, ErrInternal, func() string { return "loading a table or a cluster" })
	return load()
}

// evict drops least recently used slices that have finished loading until
// the cache fits. The caller holds c.mu.
func (c *cache) evict() {
	for c.bytes > c.maxBytes && c.lru.Len() > c.minItems {
		el := c.lru.Back()
		it := el.Value.(*cacheItem)
		select {
		case <-it.done:
		default:
			return // the oldest is still loading; try again later
		}
		c.lru.Remove(el)
		delete(c.items, it.key)
		c.bytes -= int64(len(it.data))
	}
}
