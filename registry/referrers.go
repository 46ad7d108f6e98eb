package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Blob is a small blob given in memory, such as a signature.
type Blob struct {
	MediaType   string
	Data        []byte
	Annotations map[string]string
}

// ReferrerManifest builds the manifest of an artifact that refers to
// subject (OCI image-spec 1.1 "artifact" usage): artifactType, the empty
// config ({}), layers, subject, annotations. The same arguments always
// give the same bytes (no timestamp is added).
func ReferrerManifest(subject ocispec.Descriptor, artifactType string, layers []Blob, annotations map[string]string) ([]byte, error) {
	if artifactType == "" {
		return nil, fmt.Errorf("referrer: no artifactType")
	}
	if err := subject.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("referrer: subject: %w", err)
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		// Without the inline data of DescriptorEmptyJSON: older
		// registries know only the three plain fields.
		Config: ocispec.Descriptor{
			MediaType: ocispec.MediaTypeEmptyJSON,
			Digest:    ocispec.DescriptorEmptyJSON.Digest,
			Size:      ocispec.DescriptorEmptyJSON.Size,
		},
		Layers: make([]ocispec.Descriptor, 0, len(layers)),
		// Only the fields that identify the subject.
		Subject:     &ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations: annotations,
	}
	for _, l := range layers {
		if l.MediaType == "" {
			return nil, fmt.Errorf("referrer: a layer without a media type")
		}
		m.Layers = append(m.Layers, ocispec.Descriptor{
			MediaType:   l.MediaType,
			Digest:      digest.FromBytes(l.Data),
			Size:        int64(len(l.Data)),
			Annotations: l.Annotations,
		})
	}
	return json.Marshal(m)
}

// PushReferrer pushes the artifact [ReferrerManifest] builds, so that
// [Repository.Referrers] of subject lists it. On a registry without the
// referrers API (distribution 2.8) the referrers tag schema is used:
// the image index tagged sha256-HEX (HEX of the subject's digest) gains
// the new manifest.
func (r *Repository) PushReferrer(ctx context.Context, subject ocispec.Descriptor, artifactType string, layers []Blob, annotations map[string]string) (PushResult, error) {
	manifest, err := ReferrerManifest(subject, artifactType, layers, annotations)
	if err != nil {
		return PushResult{}, err
	}
	byDigest := make(map[digest.Digest][]byte, len(layers))
	for _, l := range layers {
		byDigest[digest.FromBytes(l.Data)] = l.Data
	}
	img := Image{
		Manifest: manifest,
		Config:   []byte("{}"),
		OpenLayer: func(_ context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(byDigest[d.Digest])), nil
		},
	}
	return r.Push(ctx, img, "", PushOptions{})
}

// Referrers lists the manifests whose subject is subject, those of
// artifactType only unless it is empty: through the referrers API, or the
// referrers tag schema where the registry lacks the API. Each descriptor
// carries the referrer's artifactType and annotations. None is not an
// error.
func (r *Repository) Referrers(ctx context.Context, subject ocispec.Descriptor, artifactType string) ([]ocispec.Descriptor, error) {
	ref := r.Reference("", subject.Digest)
	if err := subject.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("referrers of %s: %w: %w", ref, ErrInvalidReference, err)
	}
	rep, err := r.oras(ctx)
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", ref, err)
	}
	var out []ocispec.Descriptor
	err = rep.Referrers(ctx, subject, artifactType, func(page []ocispec.Descriptor) error {
		out = append(out, page...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", ref, classify(err))
	}
	return out, nil
}
