package index

import (
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
)

// An index of 100,000 images is checked on every read and every write, so
// the checks that span images work on positions in the sorted IDs rather
// than on maps keyed by ID: a map lookup per parent and per step of a
// chain walk cost more than the rest of reading the index.

// prefixBits of an ID (its first hex digits) pick its bucket.
const prefixBits = 16

// bucketOf is the value of the first four hex digits of id, or -1 when id
// is not "sha256:" followed by at least four lowercase hex digits.
func bucketOf[S ~string | ~[]byte](id S) int {
	if len(id) < len(idPrefix)+4 || string(id[:len(idPrefix)]) != idPrefix {
		return -1
	}
	v := 0
	for i := len(idPrefix); i < len(idPrefix)+4; i++ {
		h := hexVal[id[i]]
		if h == 0xff {
			return -1
		}
		v = v<<4 | int(h)
	}
	return v
}

// sortEntries sorts ids, and ents along with them: by bucket first (one
// pass), then each bucket, which holds a few IDs. IDs of another form, which
// Validate reports, make it fall back to a plain sort.
func sortEntries(ids []digest.Digest, ents []*Entry) {
	type pair struct {
		id digest.Digest
		e  *Entry
	}
	pairs := make([]pair, len(ids))
	for i := range ids {
		pairs[i] = pair{ids[i], ents[i]}
	}
	byID := func(a, b pair) int { return strings.Compare(string(a.id), string(b.id)) }
	count := make([]int32, 1<<prefixBits+1)
	for _, p := range pairs {
		b := bucketOf(p.id)
		if b < 0 || len(pairs) < 4096 {
			slices.SortFunc(pairs, byID)
			count = nil
			break
		}
		count[b+1]++
	}
	if count != nil {
		for b := 1; b < len(count); b++ {
			count[b] += count[b-1]
		}
		out := make([]pair, len(pairs))
		next := slices.Clone(count[:len(count)-1])
		for _, p := range pairs {
			b := bucketOf(p.id)
			out[next[b]] = p
			next[b]++
		}
		for b := 0; b < len(count)-1; b++ {
			if count[b+1]-count[b] > 1 {
				slices.SortFunc(out[count[b]:count[b+1]], byID)
			}
		}
		pairs = out
	}
	for i, p := range pairs {
		ids[i], ents[i] = p.id, p.e
	}
}

// sorted returns the image IDs, sorted, and their entries.
func (x *Index) sorted() ([]digest.Digest, []*Entry) {
	ids := make([]digest.Digest, 0, len(x.Images))
	ents := make([]*Entry, 0, len(x.Images))
	for id, e := range x.Images {
		ids = append(ids, id)
		ents = append(ents, e)
	}
	sortEntries(ids, ents)
	return ids, ents
}

// idTable finds IDs among sorted ones: the bucket of an ID holds the
// positions of the few IDs that share its first hex digits.
type idTable struct {
	ids   []digest.Digest
	first []int32 // first[b]: position of the first ID of bucket b or above; nil for a plain binary search
}

func newIDTable(ids []digest.Digest) *idTable {
	t := &idTable{ids: ids}
	if len(ids) < 4096 {
		return t
	}
	first := make([]int32, 1<<prefixBits+1)
	b := 0
	for i, id := range ids {
		v := bucketOf(id)
		if v < b-1 {
			return t // not sorted by bucket: IDs of another form
		}
		for ; b <= v; b++ {
			first[b] = int32(i)
		}
	}
	for ; b < len(first); b++ {
		first[b] = int32(len(ids))
	}
	t.first = first
	return t
}

// find returns the position of id in the table.
func (t *idTable) find(id string) (int, bool) {
	lo, hi := 0, len(t.ids)
	if t.first != nil {
		b := bucketOf(id)
		if b < 0 {
			return 0, false
		}
		lo, hi = int(t.first[b]), int(t.first[b+1])
	}
	i, ok := slices.BinarySearch(t.ids[lo:hi], digest.Digest(id))
	return lo + i, ok
}

type graphProblem struct {
	id  digest.Digest
	msg string
}

// checkGraph finds the first dangling parent or parent loop of the
// images ids (sorted, with their entries ents), visiting them in order,
// in time linear in the index. With intern, which only a parser building
// the entries may ask for, each entry's Parent is made to share the bytes
// of the parent's ID in ids: one copy of each ID in memory.
func checkGraph(ids []digest.Digest, ents []*Entry, intern bool) *graphProblem {
	t := newIDTable(ids)
	parent := make([]int32, len(ids))
	for i, e := range ents {
		parent[i] = -1
		if e.Parent == "" {
			continue
		}
		p, ok := t.find(string(e.Parent))
		if !ok {
			return &graphProblem{ids[i], fmt.Sprintf("dangling parent: %s is not in the index", e.Parent)}
		}
		parent[i] = int32(p)
		if intern {
			e.Parent = ids[p]
		}
	}
	const (
		unseen = iota
		onPath
		done
	)
	state := make([]uint8, len(ids))
	var path []int32
	for i := range ids {
		path = path[:0]
		cur := int32(i)
		for cur >= 0 && state[cur] == unseen {
			state[cur] = onPath
			path = append(path, cur)
			cur = parent[cur]
		}
		if cur >= 0 && state[cur] == onPath {
			return &graphProblem{ids[cur], "parent loop"}
		}
		for _, p := range path {
			state[p] = done
		}
	}
	return nil
}
