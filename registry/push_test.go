package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cangallo/canga/internal/testregistry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestPush pushes an image of three layers, pushes it again (nothing is
// sent), then a child sharing the three layers (only its own layer is
// sent), and reads everything back.
func TestPush(t *testing.T) {
	ctx := context.Background()
	_, c, cnt := startPlain(t, testregistry.Options{})
	repo := repository(t, c, "canga/ubuntu")

	l1, l2, l3 := makeLayer(t, 1<<20, 1), makeLayer(t, 2<<20+17, 2), makeLayer(t, 3<<20-5, 3)
	img, opens := makeImage(t, "base", l1, l2, l3)

	var mu sync.Mutex
	sent := map[digest.Digest]int64{}
	states := map[digest.Digest][]State{}
	progress := func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.State == Uploading && p.Bytes < sent[p.Descriptor.Digest] {
			t.Errorf("progress of %s went back from %d to %d", p.Descriptor.Digest, sent[p.Descriptor.Digest], p.Bytes)
		}
		if p.State == Uploading {
			sent[p.Descriptor.Digest] = p.Bytes
		}
		states[p.Descriptor.Digest] = append(states[p.Descriptor.Digest], p.State)
	}
	res, err := repo.Push(ctx, img, "16.04", PushOptions{Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	mdesc, err := DescribeManifest(img.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Digest != mdesc.Digest || res.Manifest.ArtifactType != testArtifactType {
		t.Errorf("result manifest %+v, want %s", res.Manifest, mdesc.Digest)
	}
	if len(res.Uploaded) != 5 || len(res.Skipped) != 0 || len(res.Mounted) != 0 {
		t.Errorf("first push: uploaded %v skipped %v mounted %v, want 3 layers, config, manifest uploaded",
			digests(res.Uploaded), digests(res.Skipped), digests(res.Mounted))
	}
	if last := res.Uploaded[len(res.Uploaded)-1].Digest; last != mdesc.Digest {
		t.Errorf("the manifest went up before a blob: last uploaded %s", last)
	}
	for _, l := range []layerFile{l1, l2, l3} {
		if n := cnt.uploaded(l.desc.Digest); n != 1 {
			t.Errorf("layer %s uploaded %d times", l.desc.Digest, n)
		}
		if sent[l.desc.Digest] != l.desc.Size {
			t.Errorf("layer %s: progress ended at %d of %d bytes", l.desc.Digest, sent[l.desc.Digest], l.desc.Size)
		}
		st := states[l.desc.Digest]
		if len(st) < 2 || st[0] != Uploading || st[len(st)-1] != Uploaded {
			t.Errorf("layer %s: states %v", l.desc.Digest, st)
		}
	}
	if *opens != 3 {
		t.Errorf("layers opened %d times, want 3", *opens)
	}

	// Again: the manifest is there, so nothing else is looked at or sent.
	// (The counter counts blob uploads; manifests are PUT elsewhere.)
	before := cnt.uploadCount()
	res, err = repo.Push(ctx, img, "16.04", PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Uploaded) != 0 || len(res.Skipped) != 1 || res.Skipped[0].Digest != mdesc.Digest {
		t.Errorf("second push: uploaded %v skipped %v", digests(res.Uploaded), digests(res.Skipped))
	}
	if n := cnt.uploadCount() - before; n != 0 {
		t.Errorf("second push uploaded %d blobs", n)
	}
	if *opens != 3 {
		t.Errorf("second push opened layers: %d opens", *opens)
	}
	if res.Manifest.Digest != mdesc.Digest {
		t.Errorf("second push: manifest %s, first %s", res.Manifest.Digest, mdesc.Digest)
	}

	// A child: the three layers and a fourth. Only the fourth, the config
	// and the manifest go up.
	l4 := makeLayer(t, 1<<20+3, 4)
	child, _ := makeImage(t, "child", l1, l2, l3, l4)
	before = cnt.uploadCount()
	res, err = repo.Push(ctx, child, "child", PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := cnt.uploadCount() - before; n != 2 || cnt.uploaded(l4.desc.Digest) != 1 {
		t.Errorf("child push: %d blob uploads (want 2: layer 4 and the config); layer 4 %d times", n, cnt.uploaded(l4.desc.Digest))
	}
	for _, l := range []layerFile{l1, l2, l3} {
		if !has(res.Skipped, l.desc.Digest) {
			t.Errorf("child push: shared layer %s not skipped: skipped %v", l.desc.Digest, digests(res.Skipped))
		}
	}
	if !has(res.Uploaded, l4.desc.Digest) {
		t.Errorf("child push: new layer not uploaded: %v", digests(res.Uploaded))
	}

	// Read back.
	tags, err := repo.Tags(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tags, []string{"16.04", "child"}) {
		t.Errorf("tags %v", tags)
	}
	desc, err := repo.Resolve(ctx, "16.04")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != mdesc.Digest || desc.Size != mdesc.Size || desc.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("resolve: %+v, want %+v", desc, mdesc)
	}
	byDigest, err := repo.Resolve(ctx, mdesc.Digest.String())
	if err != nil || byDigest.Digest != mdesc.Digest {
		t.Errorf("resolve by digest: %+v, %v", byDigest, err)
	}
	m, err := repo.FetchManifest(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m, img.Manifest) {
		t.Error("fetched manifest differs from the pushed one")
	}
	cdesc := ocispec.Descriptor{MediaType: testConfigType, Digest: digest.FromBytes(img.Config), Size: int64(len(img.Config))}
	cfg, err := repo.FetchBlob(ctx, cdesc, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cfg, img.Config) {
		t.Error("fetched config differs")
	}
	if _, err := repo.FetchBlob(ctx, cdesc, cdesc.Size-1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("config over the limit: %v, want ErrTooLarge", err)
	}
	// A descriptor with the wrong digest: the registry has no such
	// blob.
	wrong := cdesc
	wrong.Digest = l4.desc.Digest
	if _, err := repo.FetchBlob(ctx, wrong, 1<<30); err == nil {
		t.Error("fetching with a wrong size succeeded")
	}

	if _, err := repo.Resolve(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("resolve of a missing tag: %v, want ErrNotFound", err)
	}
	if _, err := repository(t, c, "no/such").Tags(ctx); !errors.Is(err, ErrNotFound) {
		t.Errorf("tags of a missing repository: %v, want ErrNotFound", err)
	}
	if _, err := repo.Resolve(ctx, "bad tag"); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("resolve of a bad tag: %v", err)
	}
}

// TestPushBadSources: a layer file that is not its descriptor's size is
// refused clearly, an inconsistent image is refused before any request,
// and nothing is tagged.
func TestPushBadSources(t *testing.T) {
	ctx := context.Background()
	_, c, cnt := startPlain(t, testregistry.Options{})
	repo := repository(t, c, "bad")
	l := makeLayer(t, 100<<10, 9)
	short := makeLayer(t, 50<<10, 10)
	long := makeLayer(t, 150<<10, 11)

	for _, tc := range []struct {
		file layerFile
		want string
	}{
		{short, "ended after 51200 of 102400 bytes"},
		{long, "longer than the descriptor's 102400 bytes"},
	} {
		img, _ := makeImage(t, "x", l)
		img.OpenLayer = func(context.Context, ocispec.Descriptor) (io.ReadCloser, error) {
			return os.Open(tc.file.path)
		}
		_, err := repo.Push(ctx, img, "x", PushOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("push from a %d-byte file: %v, want %q", tc.file.desc.Size, err, tc.want)
		}
	}
	if _, err := repo.Resolve(ctx, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a failed push left a tag: %v", err)
	}

	requests := cnt.requests
	img, _ := makeImage(t, "x", l)
	img.Config = append(img.Config, ' ')
	if _, err := repo.Push(ctx, img, "x", PushOptions{}); err == nil || !strings.Contains(err.Error(), "config descriptor") {
		t.Errorf("push with a config that is not the manifest's: %v", err)
	}
	img, _ = makeImage(t, "x", l)
	img.OpenLayer = nil
	if _, err := repo.Push(ctx, img, "x", PushOptions{}); err == nil {
		t.Error("push without OpenLayer succeeded")
	}
	if _, err := repo.Push(ctx, Image{Manifest: []byte(`{"mediaType":"application/vnd.oci.image.index.v1+json"}`)}, "x", PushOptions{}); err == nil {
		t.Error("push of an index succeeded")
	}
	if _, err := repo.Push(ctx, Image{Manifest: make([]byte, MaxManifestSize+1)}, "x", PushOptions{}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("push of a huge manifest: %v", err)
	}
	img, _ = makeImage(t, "x", l)
	if _, err := repo.Push(ctx, img, "x y", PushOptions{}); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("push with a bad tag: %v", err)
	}
	if _, err := repo.Push(ctx, img, "x", PushOptions{MountFrom: []string{"Bad"}}); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("push with a bad mount source: %v", err)
	}
	if cnt.requests != requests {
		t.Errorf("refused pushes made %d requests", cnt.requests-requests)
	}
}

// TestMountFrom: blobs another repository of the registry has are
// mounted, not uploaded; a blob none has is uploaded.
func TestMountFrom(t *testing.T) {
	ctx := context.Background()
	_, c, cnt := startPlain(t, testregistry.Options{})
	base := repository(t, c, "library/base")
	other := repository(t, c, "team/other")

	l1, l2 := makeLayer(t, 1<<20, 21), makeLayer(t, 2<<20, 22)
	img, _ := makeImage(t, "base", l1, l2)
	if _, err := base.Push(ctx, img, "v1", PushOptions{}); err != nil {
		t.Fatal(err)
	}

	l3 := makeLayer(t, 512<<10, 23)
	derived, _ := makeImage(t, "derived", l1, l2, l3)
	before := cnt.uploadCount()
	res, err := other.Push(ctx, derived, "v1", PushOptions{MountFrom: []string{"no/such", "library/base"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []layerFile{l1, l2} {
		if !has(res.Mounted, l.desc.Digest) {
			t.Errorf("layer %s not mounted: mounted %v uploaded %v", l.desc.Digest, digests(res.Mounted), digests(res.Uploaded))
		}
		if n := cnt.uploaded(l.desc.Digest); n != 1 {
			t.Errorf("layer %s uploaded %d times in all, want 1 (the base push)", l.desc.Digest, n)
		}
	}
	if !has(res.Uploaded, l3.desc.Digest) || cnt.uploaded(l3.desc.Digest) != 1 {
		t.Errorf("new layer: uploaded %v, %d uploads", digests(res.Uploaded), cnt.uploaded(l3.desc.Digest))
	}
	// Layer 3 and the config.
	if n := cnt.uploadCount() - before; n != 2 {
		t.Errorf("%d blob uploads, want 2", n)
	}
	// The mounted blobs are readable in the new repository.
	rc, err := other.OpenBlob(ctx, l2.desc, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if d, err := digest.FromReader(rc); err != nil || d != l2.desc.Digest {
		t.Errorf("mounted blob reads as %s, %v", d, err)
	}
}
