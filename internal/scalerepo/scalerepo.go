// Package scalerepo generates large canga repositories, for the scale
// benchmark (bench/scale.sh) and the test that runs every command on one.
//
// A generated repository is real in every way the commands look at: each
// blob is a small qcow2 file (512-byte clusters, 4 KiB virtual, one data
// cluster of its own) named by its SHA-256; a derived image's blob names its
// parent's blob as backing file, in format qcow2; each image ID is the
// SHA-256 of the image's content, chain resolved. So gc and fsck do the work
// they do on any repository, and even a full fsck passes. Images come in
// linear chains of depth 1 to MaxDepth; every TagEvery-th image is tagged.
//
// The files are written straight into the directory, without fsync or the
// lock, as a copy or an rsync of a repository would be (SPEC §2: the
// directory is the whole repository): going through package cas, whose
// every write is fsynced, would take minutes for 100,000 blobs.
package scalerepo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/qcow2"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// Options shape a generated repository. Zero fields take the defaults.
type Options struct {
	Images int // default 100,000
	// MaxDepth is the longest chain; chain lengths cycle through 1 to
	// MaxDepth (default 20).
	MaxDepth int
	// TagEvery tags every n-th image (default 5).
	TagEvery int
	// CangafileEvery gives every n-th image a cangafile, as a built image
	// has (default 50; negative: none).
	CangafileEvery int
}

func (o Options) withDefaults() Options {
	if o.Images <= 0 {
		o.Images = 100_000
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = 20
	}
	if o.TagEvery <= 0 {
		o.TagEvery = 5
	}
	if o.CangafileEvery == 0 {
		o.CangafileEvery = 50
	}
	return o
}

// Result names images of a generated repository that commands can be tried
// on.
type Result struct {
	Images, Tags int
	// Deepest is the last image of the longest chain; DeepestChain its
	// chain, itself first.
	Deepest      digest.Digest
	DeepestChain []digest.Digest
	// Tag names an image (TagTarget).
	Tag       string
	TagTarget digest.Digest
	// Leaf is an image without children and without tags; Parent an image
	// with a child.
	Leaf, Parent digest.Digest
	IndexSize    int64
}

const (
	clusterSize = 512
	virtualSize = 8 * clusterSize
	// placeholder stands for the backing file name in the templates.
	placeholder = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	marker      = "canga-scale-blob"
)

// template is a qcow2 file whose own data cluster starts with marker, and
// whose backing file name, if any, is placeholder.
type template struct {
	file            []byte
	dataOff, nameOf int // offsets of the marker and of the placeholder (-1: none)
}

// templates[k][derived] has its data in guest cluster k.
func makeTemplates() ([clusterCount][2]template, error) {
	var out [clusterCount][2]template
	for k := range clusterCount {
		for derived := range 2 {
			content := make([]byte, virtualSize)
			copy(content[k*clusterSize:], marker)
			opt := qcow2.ConvertOptions{ClusterSize: clusterSize, Workers: 1}
			if derived == 1 {
				opt.BackingFile, opt.BackingFormat = placeholder, qcow2.FormatQcow2
			}
			w := &memFile{}
			if _, err := qcow2.Convert(context.Background(), w, &oneCluster{content: content, k: k}, opt); err != nil {
				return out, err
			}
			t := template{file: w.b, dataOff: bytes.Index(w.b, []byte(marker)), nameOf: -1}
			if derived == 1 {
				t.nameOf = bytes.Index(w.b, []byte(placeholder))
				if t.nameOf < 0 {
					return out, errors.New("scalerepo: no backing file name in the template")
				}
			}
			if t.dataOff < 0 || bytes.Count(w.b, []byte(marker)) != 1 {
				return out, errors.New("scalerepo: no data cluster in the template")
			}
			out[k][derived] = t
		}
	}
	return out, nil
}

const clusterCount = virtualSize / clusterSize

// Generate writes a repository of opt.Images images into dir, which must
// not hold one yet, and returns what it made.
func Generate(dir string, opt Options) (*Result, error) {
	blobs := filepath.Join(dir, "blobs", "sha256")
	for _, d := range []string{blobs, filepath.Join(dir, ".tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "index.yaml")); err == nil {
		return nil, fmt.Errorf("scalerepo: %s has an index already", dir)
	}
	ix, res, err := generate(opt, func(hex string, file []byte) error {
		return os.WriteFile(filepath.Join(blobs, hex), file, 0o444)
	})
	if err != nil {
		return nil, err
	}
	data, err := ix.Marshal()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.yaml"), data, 0o644); err != nil {
		return nil, err
	}
	res.IndexSize = int64(len(data))
	return res, nil
}

// Index returns the index of the repository Generate would write, without
// writing anything: for benchmarks of the index alone.
func Index(opt Options) (*index.Index, *Result, error) {
	return generate(opt, func(string, []byte) error { return nil })
}

func generate(opt Options, write func(hex string, file []byte) error) (*index.Index, *Result, error) {
	opt = opt.withDefaults()
	tmpls, err := makeTemplates()
	if err != nil {
		return nil, nil, err
	}
	ix := index.New()
	res := &Result{}
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	content := make([]byte, virtualSize)
	var parentBlob string
	var parent digest.Digest
	var chain []digest.Digest
	depth, chainLen, chainNo := 0, 0, 0
	for i := range opt.Images {
		if depth == chainLen {
			// A new chain; lengths cycle 1..MaxDepth so every depth occurs.
			chainLen = 1 + (chainNo*7)%opt.MaxDepth
			chainNo++
			depth, parent, parentBlob, chain = 0, "", "", nil
			clear(content)
		}
		k := depth % clusterCount
		t := tmpls[k][min(depth, 1)]
		file := bytes.Clone(t.file)
		// The image's own stamp makes its content, and so its ID and
		// blob, unlike any other's.
		stamp := file[t.dataOff+len(marker) : t.dataOff+len(marker)+8]
		binary.BigEndian.PutUint64(stamp, uint64(i))
		if t.nameOf >= 0 {
			copy(file[t.nameOf:], parentBlob)
		}
		copy(content[k*clusterSize:], file[t.dataOff:t.dataOff+clusterSize])
		id := digest.FromBytes(content)
		blobSum := sha256.Sum256(file)
		blobHex := hex.EncodeToString(blobSum[:])
		if err := write(blobHex, file); err != nil {
			return nil, nil, err
		}
		e := &index.Entry{
			Blob:        digest.Digest("sha256:" + blobHex),
			BlobSize:    int64(len(file)),
			Parent:      parent,
			VirtualSize: virtualSize,
			ClusterSize: clusterSize,
			Compression: qcow2.CompressionNone,
			Created:     created.Add(time.Duration(i) * time.Minute),
			Description: fmt.Sprintf("CI build %d of pipeline %d", i, chainNo),
			OS:          "Debian 12",
		}
		if opt.CangafileEvery > 0 && i%opt.CangafileEvery == opt.CangafileEvery-1 {
			e.Cangafile = cangafile(i)
		}
		// Straight into the map: Put checks blob uniqueness against every
		// image, which is quadratic over a whole generation; Marshal
		// validates the result anyway.
		ix.Images[id] = e
		if i%opt.TagEvery == opt.TagEvery-1 {
			tag := fmt.Sprintf("ci/build-%06d:latest", i)
			ix.Tags[tag] = id
			res.Tag, res.TagTarget = tag, id
		} else if depth == chainLen-1 {
			res.Leaf = id
		}
		if depth > 0 {
			res.Parent = parent
		}
		chain = append([]digest.Digest{id}, chain...)
		if len(chain) > len(res.DeepestChain) {
			res.Deepest, res.DeepestChain = id, chain
		}
		parent, parentBlob = id, blobHex
		depth++
	}
	res.Images, res.Tags = len(ix.Images), len(ix.Tags)
	return ix, res, nil
}

// cangafile is a small Cangafile mapping, as `canga build` records.
func cangafile(i int) *yaml.Node {
	str := func(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
	run := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{
		str(fmt.Sprintf("apt-get install -y build-%d", i)), str("echo done")}}
	return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{
		str("from"), str("ci/base:latest"), str("run"), run}}
}

// oneCluster is a disk whose cluster k is data and the rest unallocated.
type oneCluster struct {
	content []byte
	k       int
}

func (d *oneCluster) Size() int64  { return int64(len(d.content)) }
func (d *oneCluster) Close() error { return nil }
func (d *oneCluster) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d.content)) {
		return 0, errors.New("EOF")
	}
	return copy(p, d.content[off:]), nil
}
func (d *oneCluster) Extent(off, length int64) (qcow2.Extent, error) {
	c := off / clusterSize
	end := min(off+length, int64(len(d.content)))
	kind := qcow2.Unallocated
	if c == int64(d.k) {
		kind = qcow2.Data
		end = min(end, (c+1)*clusterSize)
	} else if c < int64(d.k) {
		end = min(end, int64(d.k)*clusterSize)
	}
	return qcow2.Extent{Offset: off, Length: end - off, Kind: kind}, nil
}

// memFile is an io.WriterAt in memory.
type memFile struct{ b []byte }

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}
