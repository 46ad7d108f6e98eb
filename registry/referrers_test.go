package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/cangallo/canga/internal/testregistry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestReferrers attaches signatures to an image on distribution 2.8,
// which has no referrers API: they must be found through the tag schema
// (tag sha256-HEX holding an image index). With deletes disabled, as in
// a stock registry, replacing the index leaves the old one behind: a
// warning, not a failure.
func TestReferrers(t *testing.T) {
	for _, del := range []bool{false, true} {
		t.Run(fmt.Sprintf("delete=%t", del), func(t *testing.T) {
			testReferrers(t, del)
		})
	}
}

func testReferrers(t *testing.T, deleteEnabled bool) {
	ctx := context.Background()
	_, c, _ := startPlain(t, testregistry.Options{Delete: deleteEnabled})
	repo := repository(t, c, "signed/image")
	img, _ := makeImage(t, "signed", makeLayer(t, 64<<10, 51))
	res, err := repo.Push(ctx, img, "v1", PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	subject := res.Manifest

	if refs, err := repo.Referrers(ctx, subject, testSigType); err != nil || len(refs) != 0 {
		t.Fatalf("referrers before any: %v, %v", refs, err)
	}

	sigs := [][]byte{
		[]byte("-----BEGIN SSH SIGNATURE-----\nfirst\n-----END SSH SIGNATURE-----\n"),
		[]byte("-----BEGIN SSH SIGNATURE-----\nsecond\n-----END SSH SIGNATURE-----\n"),
	}
	var pushed []digest.Digest
	for i, sig := range sigs {
		res, err := repo.PushReferrer(ctx, subject, testSigType,
			[]Blob{{MediaType: testSigLayerType, Data: sig}}, map[string]string{"n": fmt.Sprint(i)})
		if err != nil {
			t.Fatalf("signature %d: %v", i, err)
		}
		if res.Manifest.ArtifactType != testSigType {
			t.Errorf("signature %d: artifactType %q", i, res.Manifest.ArtifactType)
		}
		// The second signature replaces the index the first made.
		wantWarning := i > 0 && !deleteEnabled
		if (len(res.Warnings) > 0) != wantWarning {
			t.Errorf("signature %d, deletes %t: warnings %v", i, deleteEnabled, res.Warnings)
		}
		pushed = append(pushed, res.Manifest.Digest)
	}
	// Something else that refers to the image.
	if _, err := repo.PushReferrer(ctx, subject, "application/vnd.example.sbom",
		[]Blob{{MediaType: "text/plain", Data: []byte("sbom")}}, nil); err != nil {
		t.Fatal(err)
	}

	refs, err := repo.Referrers(ctx, subject, testSigType)
	if err != nil {
		t.Fatal(err)
	}
	got := digests(refs)
	slices.Sort(got)
	slices.Sort(pushed)
	if !slices.Equal(got, pushed) {
		t.Fatalf("signature referrers %v, want %v", got, pushed)
	}
	all, err := repo.Referrers(ctx, subject, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 {
		t.Errorf("all referrers: %d, want 3", len(all))
	}

	// The tag schema is what holds them.
	tags, err := repo.Tags(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fallback := "sha256-" + subject.Digest.Encoded()
	if !slices.Contains(tags, fallback) {
		t.Errorf("tags %v lack the referrers tag %s", tags, fallback)
	}
	idesc, err := repo.Resolve(ctx, fallback)
	if err != nil {
		t.Fatal(err)
	}
	if idesc.MediaType != ocispec.MediaTypeImageIndex {
		t.Errorf("referrers tag holds %s", idesc.MediaType)
	}

	// Each signature reads back: manifest, subject, layer.
	for _, r := range refs {
		mb, err := repo.FetchManifest(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(mb, &m); err != nil {
			t.Fatal(err)
		}
		if m.Subject == nil || m.Subject.Digest != subject.Digest || len(m.Layers) != 1 ||
			m.Config.MediaType != ocispec.MediaTypeEmptyJSON {
			t.Errorf("signature manifest %s", mb)
			continue
		}
		sig, err := repo.FetchBlob(ctx, m.Layers[0], 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(sigs, func(s []byte) bool { return bytes.Equal(s, sig) }) {
			t.Errorf("signature layer %q", sig)
		}
	}

	// The same signature again changes nothing.
	res2, err := repo.PushReferrer(ctx, subject, testSigType,
		[]Blob{{MediaType: testSigLayerType, Data: sigs[0]}}, map[string]string{"n": "0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res2.Uploaded) != 0 {
		t.Errorf("re-pushed signature uploaded %v", digests(res2.Uploaded))
	}
	if refs, err := repo.Referrers(ctx, subject, testSigType); err != nil || len(refs) != 2 {
		t.Errorf("after re-push: %d referrers, %v", len(refs), err)
	}
}

func TestReferrerManifestDeterministic(t *testing.T) {
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("s"), Size: 10,
		Annotations: map[string]string{"dropped": "yes"}}
	layers := []Blob{{MediaType: testSigLayerType, Data: []byte("sig")}}
	a, err := ReferrerManifest(subject, testSigType, layers, map[string]string{"b": "2", "a": "1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ReferrerManifest(subject, testSigType, layers, map[string]string{"a": "1", "b": "2"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("two builds differ:\n%s\n%s", a, b)
	}
	if bytes.Contains(a, []byte("dropped")) || bytes.Contains(a, []byte(`"data"`)) {
		t.Errorf("manifest carries more than the subject's identity or inline data: %s", a)
	}
	if _, err := ReferrerManifest(subject, "", layers, nil); err == nil {
		t.Error("no artifactType accepted")
	}
}
