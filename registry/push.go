package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"
)

// Image is what [Repository.Push] sends: an OCI image manifest, exactly
// as the caller built it (the same bytes give the same digest, so build
// them deterministically), its config, and a way to open each layer.
type Image struct {
	// Manifest is the manifest's JSON; its mediaType must be
	// application/vnd.oci.image.manifest.v1+json.
	Manifest []byte
	// Config is the config blob the manifest names (digest and size are
	// checked).
	Config []byte
	// OpenLayer opens the blob of one of the manifest's layers, given its
	// descriptor from the manifest. It is called only for layers the
	// registry lacks, perhaps concurrently. The reader is streamed to the
	// registry as it is: nothing re-hashes it (the registry checks the
	// digest), so give exactly the blob's bytes.
	OpenLayer func(ctx context.Context, layer ocispec.Descriptor) (io.ReadCloser, error)
}

// State is what happened to one node (blob or manifest) of a push.
type State int

// States of [Progress], in the order one node goes through them.
const (
	// Uploading: bytes are being sent; Progress.Bytes is how many so far.
	Uploading State = iota
	// Uploaded: the registry has the node now.
	Uploaded
	// Skipped: the registry had it already.
	Skipped
	// Mounted: the registry mounted it from a MountFrom repository.
	Mounted
)

func (s State) String() string {
	switch s {
	case Uploading:
		return "uploading"
	case Uploaded:
		return "uploaded"
	case Skipped:
		return "skipped"
	case Mounted:
		return "mounted"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Progress reports one step of a push.
type Progress struct {
	Descriptor ocispec.Descriptor
	State      State
	// Bytes is how many bytes of the node have been read for sending
	// (Uploading), or its size (Uploaded, Skipped, Mounted).
	Bytes int64
}

// PushOptions tune [Repository.Push].
type PushOptions struct {
	// MountFrom names other repositories of the same registry; a blob the
	// registry lacks in this repository is mounted from the first of them
	// that has it (no upload), else uploaded.
	MountFrom []string
	// Progress, if set, is called as nodes are uploaded, skipped or
	// mounted; calls are serialized (never two at once), and come often
	// enough for a progress bar (every progressStep bytes).
	Progress func(Progress)
	// Concurrency is how many blobs are sent at once; 0 means 3, as
	// Docker and containerd do.
	Concurrency int
}

// PushResult says what a push did.
type PushResult struct {
	// Manifest is the descriptor of the pushed manifest.
	Manifest ocispec.Descriptor
	// Uploaded, Skipped and Mounted list the nodes (blobs and the
	// manifest) by what happened to them, each in the order it happened.
	// When the manifest itself is already there, it alone is listed, as
	// skipped: nothing below it is looked at.
	Uploaded, Skipped, Mounted []ocispec.Descriptor
	// Warnings are problems that did not fail the push: a registry
	// without the referrers API that refused to delete the referrers index
	// a new referrer replaced (deletes disabled) leaves it dangling.
	Warnings []error
}

// progressStep is how often, in bytes, Progress hears of an upload.
const progressStep = 256 << 10

// Push sends img: every blob the registry lacks (a HEAD for each finds
// out; a blob it has is skipped, a blob in a MountFrom repository is
// mounted), then the manifest, then tags it with tag (none if empty).
// Pushing the same Image again sends nothing but the tag.
//
// A manifest with a subject (a referrer) is indexed under the subject:
// by the registry if it has the referrers API, else by the OCI referrers
// tag schema (tag sha256-HEX of the subject, an image index).
func (r *Repository) Push(ctx context.Context, img Image, tag string, opts PushOptions) (PushResult, error) {
	ref := r.Reference(tag, "")
	fail := func(err error) (PushResult, error) {
		return PushResult{}, fmt.Errorf("push %s: %w", ref, err)
	}
	if tag != "" {
		if err := validateTag(tag); err != nil {
			return fail(fmt.Errorf("%w: %w", ErrInvalidReference, err))
		}
	}
	for _, name := range opts.MountFrom {
		if err := ValidateName(name); err != nil {
			return fail(fmt.Errorf("mount from: %w: %w", ErrInvalidReference, err))
		}
	}
	src, err := newPushSource(img)
	if err != nil {
		return fail(err)
	}
	rep, err := r.oras(ctx)
	if err != nil {
		return fail(err)
	}
	rec := &recorder{progress: opts.Progress}
	src.rec = rec
	manifestPending := false
	copts := oras.CopyGraphOptions{
		Concurrency: opts.Concurrency,
		PreCopy: func(_ context.Context, d ocispec.Descriptor) error {
			if tag != "" && d.Digest == src.manifest.Digest {
				// Sent once, below, by its tag: a push by digest now
				// would send it twice.
				manifestPending = true
				return oras.SkipNode
			}
			rec.report(Progress{Descriptor: d, State: Uploading})
			return nil
		},
		PostCopy: func(_ context.Context, d ocispec.Descriptor) error {
			rec.done(d, Uploaded)
			return nil
		},
		OnCopySkipped: func(_ context.Context, d ocispec.Descriptor) error {
			rec.done(d, Skipped)
			return nil
		},
		OnMounted: func(_ context.Context, d ocispec.Descriptor) error {
			rec.done(d, Mounted)
			return nil
		},
	}
	if len(opts.MountFrom) > 0 {
		from := slices.Clone(opts.MountFrom)
		copts.MountFrom = func(context.Context, ocispec.Descriptor) ([]string, error) { return from, nil }
	}
	res := PushResult{Manifest: src.manifest}
	if err := oras.CopyGraph(ctx, src, rep, src.manifest, copts); err != nil {
		var refErr *remote.ReferrersError
		if !errors.As(err, &refErr) || !refErr.IsReferrersIndexDelete() {
			return fail(classify(err))
		}
		// The manifest and the new index are in; only the old index
		// could not be deleted.
		res.Warnings = append(res.Warnings, err)
		rec.done(src.manifest, Uploaded)
	}
	if tag != "" {
		if manifestPending {
			rec.report(Progress{Descriptor: src.manifest, State: Uploading})
		}
		if err := rep.PushReference(ctx, src.manifest, bytes.NewReader(img.Manifest), tag); err != nil {
			return fail(fmt.Errorf("tag: %w", classify(err)))
		}
		if manifestPending {
			rec.done(src.manifest, Uploaded)
		}
	}
	res.Uploaded, res.Skipped, res.Mounted = rec.uploaded, rec.skipped, rec.mounted
	return res, nil
}

// recorder collects what happened and serializes Progress calls.
type recorder struct {
	mu                         sync.Mutex
	progress                   func(Progress)
	uploaded, skipped, mounted []ocispec.Descriptor
}

func (r *recorder) report(p Progress) {
	if r.progress == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress(p)
}

func (r *recorder) done(d ocispec.Descriptor, s State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch s {
	case Uploaded:
		r.uploaded = append(r.uploaded, d)
	case Skipped:
		r.skipped = append(r.skipped, d)
	case Mounted:
		r.mounted = append(r.mounted, d)
	}
	if r.progress != nil {
		r.progress(Progress{Descriptor: d, State: s, Bytes: d.Size})
	}
}

// pushSource is the read-only store CopyGraph copies from: the manifest
// and config from memory, the layers from the caller's files. It answers
// Exists for exactly those nodes.
type pushSource struct {
	manifest ocispec.Descriptor
	mbytes   []byte
	config   ocispec.Descriptor
	cbytes   []byte
	layers   map[digest.Digest]ocispec.Descriptor
	open     func(context.Context, ocispec.Descriptor) (io.ReadCloser, error)
	rec      *recorder
}

func newPushSource(img Image) (*pushSource, error) {
	desc, err := DescribeManifest(img.Manifest)
	if err != nil {
		return nil, err
	}
	if desc.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("manifest: media type %q, want %s", desc.MediaType, ocispec.MediaTypeImageManifest)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(img.Manifest, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("manifest: schemaVersion %d, want 2", m.SchemaVersion)
	}
	if m.Config.Digest != digest.FromBytes(img.Config) || m.Config.Size != int64(len(img.Config)) {
		return nil, fmt.Errorf("manifest: config descriptor %s (%d bytes) does not describe the config given (%s, %d bytes)",
			m.Config.Digest, m.Config.Size, digest.FromBytes(img.Config), len(img.Config))
	}
	s := &pushSource{
		manifest: desc, mbytes: img.Manifest,
		config: m.Config, cbytes: img.Config,
		layers: make(map[digest.Digest]ocispec.Descriptor, len(m.Layers)),
		open:   img.OpenLayer,
	}
	for i, l := range m.Layers {
		if err := l.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("manifest: layer %d: %w", i, err)
		}
		if l.Size < 0 {
			return nil, fmt.Errorf("manifest: layer %d: size %d", i, l.Size)
		}
		if prev, ok := s.layers[l.Digest]; ok && prev.Size != l.Size {
			return nil, fmt.Errorf("manifest: layer %s listed with sizes %d and %d", l.Digest, prev.Size, l.Size)
		}
		s.layers[l.Digest] = l
	}
	if len(m.Layers) > 0 && img.OpenLayer == nil {
		return nil, errors.New("no OpenLayer to read the layers with")
	}
	return s, nil
}

// Fetch implements content.Fetcher.
func (s *pushSource) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	switch {
	case d.Digest == s.manifest.Digest:
		return io.NopCloser(bytes.NewReader(s.mbytes)), nil
	case d.Digest == s.config.Digest:
		return io.NopCloser(bytes.NewReader(s.cbytes)), nil
	}
	l, ok := s.layers[d.Digest]
	if !ok {
		return nil, fmt.Errorf("push source: %s is not part of the image", d.Digest)
	}
	rc, err := s.open(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("open layer %s: %w", l.Digest, err)
	}
	return &sizedReader{rc: rc, desc: l, rec: s.rec}, nil
}

// Exists implements content.ReadOnlyStorage.
func (s *pushSource) Exists(_ context.Context, d ocispec.Descriptor) (bool, error) {
	_, isLayer := s.layers[d.Digest]
	return isLayer || d.Digest == s.manifest.Digest || d.Digest == s.config.Digest, nil
}

// sizedReader streams a layer, reporting progress, and fails clearly if
// the file is not the descriptor's size (the HTTP client would only say
// "ContentLength=N with Body length M").
type sizedReader struct {
	rc             io.ReadCloser
	desc           ocispec.Descriptor
	rec            *recorder
	sent, reported int64
}

func (r *sizedReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.sent += int64(n)
	if r.sent > r.desc.Size {
		return n, fmt.Errorf("layer %s: the source is longer than the descriptor's %d bytes", r.desc.Digest, r.desc.Size)
	}
	if errors.Is(err, io.EOF) && r.sent < r.desc.Size {
		return n, fmt.Errorf("layer %s: the source ended after %d of %d bytes: %w", r.desc.Digest, r.sent, r.desc.Size, io.ErrUnexpectedEOF)
	}
	if r.sent-r.reported >= progressStep || (r.sent == r.desc.Size && r.reported != r.sent) {
		r.reported = r.sent
		r.rec.report(Progress{Descriptor: r.desc, State: Uploading, Bytes: r.sent})
	}
	return n, err
}

func (r *sizedReader) Close() error { return r.rc.Close() }
