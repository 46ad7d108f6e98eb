package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
)

// MaxManifestSize caps every manifest this package reads or writes: 4 MiB,
// the limit of distribution and of oras-go. A bigger manifest is refused
// with [ErrTooLarge] before a byte of it is read.
const MaxManifestSize = 4 << 20

// Bounds on server-driven pagination, so that a misbehaving registry
// cannot make a listing endless. Each page is also capped at
// MaxManifestSize bytes.
const (
	maxTagPages      = 1000
	maxReferrerPages = 100
)

// Repository is one repository of a registry. It is safe for concurrent
// use.
type Repository struct {
	client *Client
	name   string

	mu     sync.Mutex
	remote *remote.Repository
}

// Name returns the repository name.
func (r *Repository) Name() string { return r.name }

// Reference returns the reference of the repository with tag or digest
// dig (either may be empty).
func (r *Repository) Reference(tag string, dig digest.Digest) Reference {
	return Reference{Host: r.client.host, Name: r.name, Tag: tag, Digest: dig}
}

// oras returns the oras-go repository, made on first use once the scheme
// is known. It keeps what oras-go learns about the registry (whether it
// has the referrers API) for later calls.
func (r *Repository) oras(ctx context.Context) (*remote.Repository, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.remote != nil {
		return r.remote, nil
	}
	plain, err := r.client.plainHTTP(ctx)
	if err != nil {
		return nil, err
	}
	r.remote = &remote.Repository{
		Client:               r.client.auth,
		Reference:            registry.Reference{Registry: r.client.host, Repository: r.name},
		PlainHTTP:            plain,
		MaxMetadataBytes:     MaxManifestSize,
		TagListMaxPages:      maxTagPages,
		ReferrerListMaxPages: maxReferrerPages,
	}
	return r.remote, nil
}

// Resolve returns the descriptor of the manifest that tagOrDigest names
// (HEAD /v2/NAME/manifests/REF): its media type, digest and size.
func (r *Repository) Resolve(ctx context.Context, tagOrDigest string) (ocispec.Descriptor, error) {
	ref := r.Reference(tagOrDigest, "")
	if d := digest.Digest(tagOrDigest); d.Validate() == nil {
		ref = r.Reference("", d)
	} else if err := validateTag(tagOrDigest); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("resolve %s: %w: %w", ref, ErrInvalidReference, err)
	}
	rep, err := r.oras(ctx)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("resolve %s: %w", ref, err)
	}
	desc, err := rep.Resolve(ctx, tagOrDigest)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("resolve %s: %w", ref, classify(err))
	}
	return desc, nil
}

// FetchManifest returns the manifest desc describes, checked against its
// size and digest. A manifest bigger than MaxManifestSize is refused with
// [ErrTooLarge] before it is requested; the registry's answer is read
// only up to desc.Size bytes.
func (r *Repository) FetchManifest(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	ref := r.Reference("", desc.Digest)
	if desc.Size > MaxManifestSize {
		return nil, fmt.Errorf("fetch manifest %s: %w: %d bytes, the limit is %d", ref, ErrTooLarge, desc.Size, MaxManifestSize)
	}
	rep, err := r.oras(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest %s: %w", ref, err)
	}
	b, err := fetchAll(ctx, rep.Manifests(), desc)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest %s: %w", ref, err)
	}
	return b, nil
}

// FetchBlob returns a small blob (a config, a signature), checked against
// desc's size and digest. A blob bigger than limit is refused with
// [ErrTooLarge] before it is requested. Large blobs are streamed with
// [Repository.OpenBlob] instead.
func (r *Repository) FetchBlob(ctx context.Context, desc ocispec.Descriptor, limit int64) ([]byte, error) {
	ref := r.Reference("", desc.Digest)
	if desc.Size > limit {
		return nil, fmt.Errorf("fetch blob %s: %w: %d bytes, the limit is %d", ref, ErrTooLarge, desc.Size, limit)
	}
	rep, err := r.oras(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", ref, err)
	}
	b, err := fetchAll(ctx, rep.Blobs(), desc)
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", ref, err)
	}
	return b, nil
}

// fetchAll reads exactly desc.Size bytes and checks the digest and that
// nothing follows. The caller has capped desc.Size.
func fetchAll(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) ([]byte, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: descriptor: %w", ErrInvalidReference, err)
	}
	if desc.Size < 0 {
		return nil, fmt.Errorf("%w: descriptor size %d", ErrCorrupt, desc.Size)
	}
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return nil, classify(err)
	}
	defer rc.Close()
	b, err := content.ReadAll(rc, desc)
	if err != nil {
		return nil, classify(err)
	}
	return b, nil
}

// Tags lists the repository's tags in the registry's order (lexical for
// distribution). A repository that does not exist is [ErrNotFound].
func (r *Repository) Tags(ctx context.Context) ([]string, error) {
	ref := r.Reference("", "")
	rep, err := r.oras(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", ref, err)
	}
	var tags []string
	err = rep.Tags(ctx, "", func(page []string) error {
		tags = append(tags, page...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", ref, classify(err))
	}
	return tags, nil
}

// DescribeManifest returns the descriptor of manifest bytes as Push sends
// them: the mediaType and artifactType of the JSON, its digest and size.
func DescribeManifest(manifest []byte) (ocispec.Descriptor, error) {
	if len(manifest) > MaxManifestSize {
		return ocispec.Descriptor{}, fmt.Errorf("manifest: %w: %d bytes, the limit is %d", ErrTooLarge, len(manifest), MaxManifestSize)
	}
	var m struct {
		MediaType    string `json:"mediaType"`
		ArtifactType string `json:"artifactType"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("manifest: %w", err)
	}
	if m.MediaType == "" {
		return ocispec.Descriptor{}, fmt.Errorf("manifest: no mediaType")
	}
	return ocispec.Descriptor{
		MediaType:    m.MediaType,
		ArtifactType: m.ArtifactType,
		Digest:       digest.FromBytes(manifest),
		Size:         int64(len(manifest)),
	}, nil
}
