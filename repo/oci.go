package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/index/signing"
	"github.com/cangallo/canga/qcow2"
	"github.com/cangallo/canga/registry"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.yaml.in/yaml/v3"
)

// The OCI form of a canga image (SPEC §8).
const (
	ArtifactType          = "application/vnd.cangallo.image.v1"
	ConfigMediaType       = "application/vnd.cangallo.image.config.v1+json"
	LayerMediaType        = "application/vnd.cangallo.qcow2.v1"
	SignatureArtifactType = "application/vnd.cangallo.signature.v1"
	SignatureMediaType    = "application/vnd.cangallo.sshsig.v1"
	// AnnotationImageID carries the image ID on the manifest.
	AnnotationImageID = "io.cangallo.image.id"
)

// maxConfigSize bounds the config blob of an artifact: a chain of 256
// entries and a Cangafile fit in far less.
const maxConfigSize = 4 << 20

var (
	// ErrNotCanga: a registry's manifest is not a canga image.
	ErrNotCanga = errors.New("repo: not a canga image")
	// ErrBadArtifact: a canga artifact contradicts itself (config and
	// layers disagree).
	ErrBadArtifact = errors.New("repo: inconsistent canga artifact")
	// ErrUnsigned: a registry image has no valid signature by an allowed
	// signer.
	ErrUnsigned = errors.New("repo: no valid signature")
)

// RegistryOptions say how to reach a registry.
type RegistryOptions struct {
	// PlainHTTP talks plain HTTP to the registry (--plain-http).
	PlainHTTP bool
	// CAFile adds the certificates of a PEM file to the system roots.
	CAFile string
}

// registryRepo opens the repository of a registry a reference names.
func (h *Home) registryRepo(ref string, opt RegistryOptions) (registry.Reference, *registry.Repository, error) {
	rf, err := registry.ParseReference(ref)
	if err != nil {
		return registry.Reference{}, nil, err
	}
	ua := h.UserAgent
	c, err := registry.NewClient(rf.Host, registry.Options{PlainHTTP: opt.PlainHTTP, CAFile: opt.CAFile, UserAgent: ua})
	if err != nil {
		return registry.Reference{}, nil, err
	}
	rr, err := c.Repository(rf.Name)
	if err != nil {
		return registry.Reference{}, nil, err
	}
	return rf, rr, nil
}

// ociConfig is the config blob of a canga artifact.
type ociConfig struct {
	ID          digest.Digest `json:"id"`
	VirtualSize int64         `json:"virtual-size"`
	Description string        `json:"description,omitempty"`
	OS          string        `json:"os,omitempty"`
	Created     string        `json:"created,omitempty"`
	Cangafile   any           `json:"cangafile,omitempty"`
	Chain       []ociLayer    `json:"chain"`
}

// ociLayer is one blob of the chain, base first, with the keys of
// index.yaml.
type ociLayer struct {
	ID          digest.Digest `json:"id"`
	Blob        digest.Digest `json:"blob"`
	BlobSize    int64         `json:"blob-size"`
	VirtualSize int64         `json:"virtual-size"`
	ClusterSize int64         `json:"cluster-size,omitempty"`
	Compression string        `json:"compression,omitempty"`
}

func formatCreated(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// artifact builds the manifest and config of image id of ix (SPEC §8),
// deterministically: the same image gives the same bytes, so the same
// manifest digest, whenever it is pushed.
func artifact(ix *index.Index, id digest.Digest) (manifest, config []byte, err error) {
	chain, err := ix.Chain(id)
	if err != nil {
		return nil, nil, err
	}
	slices.Reverse(chain)
	e := ix.Images[id]
	cfg := ociConfig{ID: id, VirtualSize: e.VirtualSize, Description: e.Description, OS: e.OS, Created: formatCreated(e.Created)}
	if e.Cangafile != nil {
		var v any
		if err := e.Cangafile.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("cangafile of %s: %w", index.ShortID(id), err)
		}
		cfg.Cangafile = v
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Annotations:  map[string]string{AnnotationImageID: string(id)},
	}
	if cfg.Created != "" {
		m.Annotations[ocispec.AnnotationCreated] = cfg.Created
	}
	if e.Description != "" {
		m.Annotations[ocispec.AnnotationDescription] = e.Description
	}
	for _, cid := range chain {
		ce := ix.Images[cid]
		if ce.Blob == "" {
			return nil, nil, fmt.Errorf("image %s is a Cangallo image without a blob digest: import it into a local repository first", index.ShortID(cid))
		}
		cfg.Chain = append(cfg.Chain, ociLayer{ID: cid, Blob: ce.Blob, BlobSize: ce.BlobSize, VirtualSize: ce.VirtualSize, ClusterSize: ce.ClusterSize, Compression: string(ce.Compression)})
		m.Layers = append(m.Layers, ocispec.Descriptor{
			MediaType:   LayerMediaType,
			Digest:      ce.Blob,
			Size:        ce.BlobSize,
			Annotations: map[string]string{ocispec.AnnotationTitle: ce.Blob.Encoded()},
		})
	}
	if config, err = json.Marshal(cfg); err != nil {
		return nil, nil, err
	}
	m.Config = ocispec.Descriptor{MediaType: ConfigMediaType, Digest: digest.FromBytes(config), Size: int64(len(config))}
	if manifest, err = json.Marshal(m); err != nil {
		return nil, nil, err
	}
	return manifest, config, nil
}

// PushOptions tune [Repo.Push].
type PushOptions struct {
	RegistryOptions
	// MountFrom names repositories of the same registry whose blobs are
	// mounted instead of uploaded.
	MountFrom []string
	// SignKey, if set, is an SSH key (as for [Repo.Sign]) whose signature
	// of the manifest digest is attached as a referrer.
	SignKey string
	// ContainerDisk pushes the image flattened as a KubeVirt
	// containerDisk instead of the canga artifact; Platform is its
	// architecture (default amd64).
	ContainerDisk bool
	Platform      string
	// Progress hears, per blob (named by its title, "config" or
	// "manifest"), the bytes sent and its size. Calls are serialised.
	Progress func(name string, done, size int64)
}

// PushResult says what a push did.
type PushResult struct {
	// Reference names the pushed manifest, by tag.
	Reference registry.Reference
	// Manifest is the manifest's digest.
	Manifest digest.Digest
	// Uploaded, Skipped and Mounted count blobs and manifests by what
	// happened to them; UploadedBytes is the bytes sent.
	Uploaded, Skipped, Mounted int
	UploadedBytes              int64
	// Signature is the digest of the signature referrer, when signed.
	Signature digest.Digest
	// Warnings are problems that did not fail the push.
	Warnings []error
}

// Push sends image id of r (whose index is ix) to the OCI registry
// repository ref names (oci://HOST[:PORT]/NAME[:TAG], TAG "latest" when
// absent), as SPEC §8's artifact: its chain's blobs as layers, streamed
// from the blob files, only those the registry lacks, then the manifest,
// tagged. With opt.SignKey the manifest digest is signed and the
// signature attached as a referrer.
func (r *Repo) Push(ctx context.Context, ix *index.Index, id digest.Digest, ref string, opt PushOptions) (*PushResult, error) {
	h := r.h
	if h == nil {
		h = &Home{}
	}
	rf, rr, err := h.registryRepo(ref, opt.RegistryOptions)
	if err != nil {
		return nil, err
	}
	if rf.Digest != "" {
		return nil, fmt.Errorf("push to %s: name a tag, not a digest", rf)
	}
	if rf.Tag == "" {
		rf.Tag = "latest"
	}
	chain, err := ix.Chain(id)
	if err != nil {
		return nil, err
	}
	for _, cid := range chain {
		if !r.Present(ix.Images[cid]) {
			return nil, fmt.Errorf("%w: %s (in the chain of %s)", ErrNotPulled, index.ShortID(cid), index.ShortID(id))
		}
	}
	var img registry.Image
	if opt.ContainerDisk {
		cd, err := r.containerDisk(ctx, ix, id, opt.Platform)
		if err != nil {
			return nil, err
		}
		defer cd.close()
		img = cd.image
	} else {
		manifest, config, err := artifact(ix, id)
		if err != nil {
			return nil, err
		}
		img = registry.Image{Manifest: manifest, Config: config, OpenLayer: func(_ context.Context, l ocispec.Descriptor) (io.ReadCloser, error) {
			return r.store.Open(l.Digest)
		}}
	}
	var progress func(registry.Progress)
	if opt.Progress != nil {
		progress = func(p registry.Progress) {
			opt.Progress(descName(p.Descriptor), p.Bytes, p.Descriptor.Size)
		}
	}
	pr, err := rr.Push(ctx, img, rf.Tag, registry.PushOptions{MountFrom: opt.MountFrom, Progress: progress})
	if err != nil {
		return nil, err
	}
	res := &PushResult{Reference: rf, Manifest: pr.Manifest.Digest, Uploaded: len(pr.Uploaded), Skipped: len(pr.Skipped), Mounted: len(pr.Mounted), Warnings: pr.Warnings}
	for _, d := range pr.Uploaded {
		res.UploadedBytes += d.Size
	}
	if opt.SignKey != "" {
		sig, err := signManifest(opt.SignKey, pr.Manifest.Digest)
		if err != nil {
			return res, err
		}
		sr, err := rr.PushReferrer(ctx, pr.Manifest, SignatureArtifactType, []registry.Blob{{MediaType: SignatureMediaType, Data: sig}}, nil)
		if err != nil {
			return res, fmt.Errorf("push the signature of %s: %w", rf, err)
		}
		res.Signature = sr.Manifest.Digest
		res.Warnings = append(res.Warnings, sr.Warnings...)
	}
	return res, nil
}

// descName names a pushed node for a progress report.
func descName(d ocispec.Descriptor) string {
	if t := d.Annotations[ocispec.AnnotationTitle]; t != "" {
		return index.ShortID(digest.Digest("sha256:" + t))
	}
	switch d.MediaType {
	case ConfigMediaType, ocispec.MediaTypeImageConfig, ocispec.MediaTypeEmptyJSON:
		return "config"
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex:
		return "manifest"
	}
	return index.ShortID(d.Digest)
}

// signManifest signs the manifest digest string (SPEC §8: "sha256:HEX",
// no newline) for the canga-oci namespace.
func signManifest(keyFile string, manifest digest.Digest) ([]byte, error) {
	signer, err := signing.LoadSigner(keyFile)
	if err != nil {
		return nil, err
	}
	return signing.SignIn(signing.OCINamespace, []byte(manifest), signer)
}

// RegistryPullOptions tune [Home.PullRegistry].
type RegistryPullOptions struct {
	RegistryOptions
	// Tag names the image in the destination; empty means Docker's name,
	// the reference's last path element and its tag (none for a pull by
	// digest).
	Tag string
	// AllowedSigners, if set, requires a valid signature by one of the
	// signers it lists before anything is stored.
	AllowedSigners string
	// Progress is as for [CopyOptions].
	Progress func(id digest.Digest, done, size int64)
}

// RegistryPull says what a pull from a registry did.
type RegistryPull struct {
	ID       digest.Digest
	Manifest digest.Digest
	Tag      string
	Moved    digest.Digest // the image the tag was moved from, if it moved
	// Signer names the signer of a verified signature.
	Signer, Fingerprint string
	Copied              []digest.Digest
}

// PullRegistry copies the canga image that ref names (oci://HOST/NAME
// with :TAG, "latest" when absent, or @DIGEST) into the local repository
// dst. Everything is checked before it is visible: the manifest (at most
// 4 MiB, of canga's artifact type), the config against the layers, the
// signature when signers are required; then [Repo.Copy] checks each
// layer as it streams, as for any source, and each image's content
// against its image ID before the index names it.
func (h *Home) PullRegistry(ctx context.Context, ref string, dst *Repo, opt RegistryPullOptions) (*RegistryPull, error) {
	if dst.Remote() {
		return nil, fmt.Errorf("%w: %s: pull into a local repository", ErrRemote, dst.Name())
	}
	rf, rr, err := h.registryRepo(ref, opt.RegistryOptions)
	if err != nil {
		return nil, err
	}
	if rf.Tag == "" && rf.Digest == "" {
		rf.Tag = "latest" // as push, and Docker
	}
	src, err := openArtifact(ctx, rf, rr)
	if err != nil {
		return nil, err
	}
	res := &RegistryPull{ID: src.id, Manifest: src.manifest.Digest, Tag: opt.Tag}
	if res.Tag == "" && rf.Tag != "" {
		res.Tag = path.Base(rf.Name) + ":" + rf.Tag
	}
	if res.Tag != "" {
		if err := h.CheckTag(res.Tag); err != nil {
			return nil, fmt.Errorf("%w (give another with --tag)", err)
		}
	}
	if opt.AllowedSigners != "" {
		if res.Signer, res.Fingerprint, err = src.verify(ctx, opt.AllowedSigners); err != nil {
			return nil, err
		}
	}
	// Nothing vouches for the image IDs of a registry's config (a
	// signature covers the manifest, not the content): each image is
	// hashed before it enters the index.
	cr, err := dst.Copy(ctx, src, src.ix, src.id, CopyOptions{Tag: res.Tag, Progress: opt.Progress, VerifyIDs: true})
	if err != nil {
		return nil, err
	}
	res.Copied, res.Moved = cr.Copied, cr.Moved
	return res, nil
}

// ociSource is a canga artifact of a registry as a [Source]: an index of
// its chain, made from its config, and its layers.
type ociSource struct {
	ref      registry.Reference
	repo     *registry.Repository
	manifest ocispec.Descriptor
	id       digest.Digest
	ix       *index.Index
	layers   map[digest.Digest]ocispec.Descriptor
}

func (s *ociSource) String() string { return s.ref.String() }

func (s *ociSource) Index(context.Context) (*index.Index, error) { return s.ix, nil }

func (s *ociSource) Open(ctx context.Context, _ digest.Digest, e *index.Entry, off int64) (io.ReadCloser, error) {
	l, ok := s.layers[e.Blob]
	if !ok {
		return nil, fmt.Errorf("%w: %s has no layer %s", ErrBadArtifact, s.ref, e.Blob)
	}
	return s.repo.OpenBlob(ctx, l, off)
}

// openArtifact resolves ref and checks its manifest and config: a canga
// artifact whose config's chain is its layers, blob for blob.
func openArtifact(ctx context.Context, rf registry.Reference, rr *registry.Repository) (*ociSource, error) {
	desc, err := rr.Resolve(ctx, rf.TagOrDigest())
	if err != nil {
		return nil, err
	}
	if rf.Digest != "" && desc.Digest != rf.Digest {
		return nil, fmt.Errorf("%w: %s resolves to %s", ErrBadArtifact, rf, desc.Digest)
	}
	mb, err := rr.FetchManifest(ctx, desc)
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: manifest: %w", ErrBadArtifact, rf, err)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest || m.ArtifactType != ArtifactType {
		return nil, fmt.Errorf("%w: %s is a %s of artifact type %q, not %q", ErrNotCanga, rf, orNone(m.MediaType), m.ArtifactType, ArtifactType)
	}
	if m.Config.MediaType != ConfigMediaType {
		return nil, fmt.Errorf("%w: %s: config of media type %q", ErrBadArtifact, rf, m.Config.MediaType)
	}
	cb, err := rr.FetchBlob(ctx, m.Config, maxConfigSize)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(cb))
	dec.DisallowUnknownFields()
	var cfg ociConfig
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%w: %s: config: %w", ErrBadArtifact, rf, err)
	}
	ix, err := cfg.index(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadArtifact, rf, err)
	}
	s := &ociSource{ref: rf, repo: rr, manifest: desc, id: cfg.ID, ix: ix, layers: map[digest.Digest]ocispec.Descriptor{}}
	for _, l := range m.Layers {
		s.layers[l.Digest] = l
	}
	return s, nil
}

func orNone(s string) string {
	if s == "" {
		return "document without a media type"
	}
	return s
}

// index makes the index of the chain the config lists, checking it
// against the manifest's layers and the manifest's annotations.
func (c *ociConfig) index(m ocispec.Manifest) (*index.Index, error) {
	if len(c.Chain) == 0 || len(c.Chain) > qcow2.MaxChainDepth {
		return nil, fmt.Errorf("config lists %d images", len(c.Chain))
	}
	if len(c.Chain) != len(m.Layers) {
		return nil, fmt.Errorf("config lists %d images, the manifest %d layers", len(c.Chain), len(m.Layers))
	}
	if top := c.Chain[len(c.Chain)-1]; top.ID != c.ID || top.VirtualSize != c.VirtualSize {
		return nil, fmt.Errorf("config's image %s is not the top of its chain (%s)", c.ID, top.ID)
	}
	if a := m.Annotations[AnnotationImageID]; a != string(c.ID) {
		return nil, fmt.Errorf("manifest says image %q, config %s", a, c.ID)
	}
	ix := index.New()
	var parent digest.Digest
	for i, l := range c.Chain {
		ml := m.Layers[i]
		switch {
		case ml.MediaType != LayerMediaType:
			return nil, fmt.Errorf("layer %d has media type %q", i, ml.MediaType)
		case ml.Digest != l.Blob || ml.Size != l.BlobSize:
			return nil, fmt.Errorf("layer %d is %s (%d bytes), the config's chain says %s (%d bytes)", i, ml.Digest, ml.Size, l.Blob, l.BlobSize)
		case ml.Annotations[ocispec.AnnotationTitle] != l.Blob.Encoded():
			return nil, fmt.Errorf("layer %d is titled %q, not its blob's hex", i, ml.Annotations[ocispec.AnnotationTitle])
		}
		e := &index.Entry{Blob: l.Blob, BlobSize: l.BlobSize, Parent: parent, VirtualSize: l.VirtualSize, ClusterSize: l.ClusterSize, Compression: qcow2.Compression(l.Compression)}
		if l.ID == c.ID {
			if err := c.top(e); err != nil {
				return nil, err
			}
		}
		if err := ix.Put(l.ID, e); err != nil {
			return nil, fmt.Errorf("chain entry %d: %w", i, err)
		}
		parent = l.ID
	}
	return ix, nil
}

// top puts the config's description of the image into its entry.
func (c *ociConfig) top(e *index.Entry) error {
	e.Description, e.OS = c.Description, c.OS
	if c.Created != "" {
		t, err := time.Parse(time.RFC3339, c.Created)
		if err != nil {
			return fmt.Errorf("created %q: %w", c.Created, err)
		}
		e.Created = t
	}
	if c.Cangafile != nil {
		var n yaml.Node
		if err := n.Encode(c.Cangafile); err != nil {
			return fmt.Errorf("cangafile: %w", err)
		}
		e.Cangafile = &n
	}
	return nil
}

// verify requires a signature referrer of the manifest by one of the
// allowed signers in file.
func (s *ociSource) verify(ctx context.Context, file string) (principal, fingerprint string, err error) {
	signers, err := signing.LoadAllowedSigners(file)
	if err != nil {
		return "", "", err
	}
	refs, err := s.repo.Referrers(ctx, s.manifest, SignatureArtifactType)
	if err != nil {
		return "", "", err
	}
	var errs []error
	for _, r := range refs {
		sig, err := s.fetchSignature(ctx, r)
		if err == nil {
			principal, fingerprint, err = signing.VerifyIn(signing.OCINamespace, []byte(s.manifest.Digest), sig, signers, time.Now())
			if err == nil {
				return principal, fingerprint, nil
			}
		}
		errs = append(errs, fmt.Errorf("signature %s: %w", index.ShortID(r.Digest), err))
	}
	if len(errs) == 0 {
		return "", "", fmt.Errorf("%w: %s has no signature", ErrUnsigned, s.ref)
	}
	return "", "", fmt.Errorf("%w: %s: %w", ErrUnsigned, s.ref, errors.Join(errs...))
}

// fetchSignature reads the armored signature of a signature referrer.
func (s *ociSource) fetchSignature(ctx context.Context, d ocispec.Descriptor) ([]byte, error) {
	mb, err := s.repo.FetchManifest(ctx, d)
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, err
	}
	if m.ArtifactType != SignatureArtifactType || len(m.Layers) != 1 || m.Layers[0].MediaType != SignatureMediaType {
		return nil, fmt.Errorf("%w: not a canga signature", ErrBadArtifact)
	}
	if m.Subject == nil || m.Subject.Digest != s.manifest.Digest {
		return nil, fmt.Errorf("%w: a signature of another manifest", ErrBadArtifact)
	}
	return s.repo.FetchBlob(ctx, m.Layers[0], signing.MaxSignatureSize)
}

// RegistryTag is one tag of a registry repository that names a canga
// image.
type RegistryTag struct {
	Tag      string        `json:"tag"`
	ID       digest.Digest `json:"id"`
	Manifest digest.Digest `json:"digest"`
	// Kind is "image" for a canga artifact, "containerdisk" for a
	// KubeVirt containerDisk pushed by canga.
	Kind string `json:"kind"`
}

// RegistryTags lists the tags of the registry repository ref names
// (oci://HOST/NAME) that are canga images, with their image IDs; other
// tags (the referrers tags of signatures, foreign images) are left out.
func (h *Home) RegistryTags(ctx context.Context, ref string, opt RegistryOptions) ([]RegistryTag, error) {
	rf, rr, err := h.registryRepo(ref, opt)
	if err != nil {
		return nil, err
	}
	if rf.Tag != "" || rf.Digest != "" {
		return nil, fmt.Errorf("list %s: name a repository, without a tag or digest", rf)
	}
	tags, err := rr.Tags(ctx)
	if err != nil {
		return nil, err
	}
	var out []RegistryTag
	for _, tag := range tags {
		desc, err := rr.Resolve(ctx, tag)
		if err != nil {
			return nil, err
		}
		if desc.MediaType != ocispec.MediaTypeImageManifest {
			continue
		}
		mb, err := rr.FetchManifest(ctx, desc)
		if err != nil {
			return nil, err
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(mb, &m); err != nil {
			continue
		}
		id := digest.Digest(m.Annotations[AnnotationImageID])
		if _, err := index.ParseID(string(id)); err != nil {
			continue
		}
		kind := "image"
		if m.ArtifactType != ArtifactType {
			if m.Config.MediaType != ocispec.MediaTypeImageConfig {
				continue
			}
			kind = "containerdisk"
		}
		out = append(out, RegistryTag{Tag: tag, ID: id, Manifest: desc.Digest, Kind: kind})
	}
	slices.SortFunc(out, func(a, b RegistryTag) int { return strings.Compare(a.Tag, b.Tag) })
	return out, nil
}
