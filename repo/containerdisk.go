package repo

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cangallo/canga/internal/panics"

	"github.com/cangallo/canga/cas"
	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/qcow2"
	"github.com/cangallo/canga/registry"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// KubeVirt runs a containerDisk's file as the qemu user of its images,
// uid and gid 107, which must be able to read it.
const (
	containerDiskUID  = 107
	containerDiskMode = 0o440
)

// containerDiskImage is a containerDisk ready to push: the flattened disk
// in a temp file of the repository, and the image that streams it.
type containerDiskImage struct {
	image registry.Image
	tmp   *cas.TempFile
}

func (c *containerDiskImage) close() { _ = c.tmp.Discard() }

// containerDisk makes the KubeVirt containerDisk of image id (SPEC §8):
// an ordinary OCI image whose one layer is an uncompressed tar holding
// disk/HEX.qcow2 (HEX the image ID's), owned 107:107, mode 0440. The disk
// is the image flattened into one compressed qcow2 file, in the
// repository's .tmp/ (flocked, so gc leaves it alone; removed when the
// push ends): a multi-GiB disk is never in memory. The tar is made twice
// from it, once to learn its digest and once to send it, and both times
// byte for byte the same.
func (r *Repo) containerDisk(ctx context.Context, ix *index.Index, id digest.Digest, platform string) (*containerDiskImage, error) {
	arch, err := parsePlatform(platform)
	if err != nil {
		return nil, err
	}
	e := ix.Images[id]
	d, err := r.OpenImage(ix, id)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	tmp, err := r.store.CreateTemp("containerdisk-*.qcow2")
	if err != nil {
		return nil, err
	}
	cd := &containerDiskImage{tmp: tmp}
	if _, err := qcow2.Convert(ctx, tmp.File, d, qcow2.ConvertOptions{Compression: qcow2.CompressionZlib}); err != nil {
		cd.close()
		return nil, fmt.Errorf("flatten %s: %w", index.ShortID(id), err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		cd.close()
		return nil, err
	}
	disk := diskTar{f: tmp.File, size: fi.Size(), name: "disk/" + id.Encoded() + ".qcow2", mtime: e.Created.UTC().Truncate(time.Second)}
	h := sha256.New()
	n, err := disk.writeTo(h)
	if err != nil {
		cd.close()
		return nil, err
	}
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.NewDigest(digest.SHA256, h), Size: n}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{Architecture: arch, OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}},
	}
	if !e.Created.IsZero() {
		t := e.Created.UTC()
		cfg.Created = &t
	}
	config, err := json.Marshal(cfg)
	if err != nil {
		cd.close()
		return nil, err
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))},
		Layers:    []ocispec.Descriptor{layer},
		Annotations: map[string]string{
			AnnotationImageID: string(id),
		},
	}
	if c := formatCreated(e.Created); c != "" {
		m.Annotations[ocispec.AnnotationCreated] = c
	}
	manifest, err := json.Marshal(m)
	if err != nil {
		cd.close()
		return nil, err
	}
	cd.image = registry.Image{Manifest: manifest, Config: config, OpenLayer: func(context.Context, ocispec.Descriptor) (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			var err error
			defer func() { pw.CloseWithError(err) }()
			defer panics.Recover(&err, ErrInternal, func() string { return "writing the containerDisk layer of " + index.ShortID(id) })
			_, err = disk.writeTo(pw)
		}()
		return pr, nil
	}}
	return cd, nil
}

// parsePlatform reads --platform: ARCH or linux/ARCH.
func parsePlatform(p string) (string, error) {
	if p == "" {
		return "amd64", nil
	}
	arch, ok := strings.CutPrefix(p, "linux/")
	if !ok && strings.Contains(p, "/") {
		return "", fmt.Errorf("platform %q: a containerDisk is a linux image (linux/ARCH)", p)
	}
	switch arch {
	case "amd64", "arm64", "s390x", "ppc64le", "riscv64", "386", "arm":
		return arch, nil
	}
	return "", fmt.Errorf("platform %q: unknown architecture", p)
}

// diskTar is the containerDisk layer: a tar of one directory and one
// file, with fixed owners, modes and times, so that it is the same bytes
// every time it is written.
type diskTar struct {
	f     *os.File
	size  int64
	name  string
	mtime time.Time
}

func (d diskTar) writeTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	dir := &tar.Header{Typeflag: tar.TypeDir, Name: "disk/", Mode: 0o555, Uid: containerDiskUID, Gid: containerDiskUID, ModTime: d.mtime}
	file := &tar.Header{Typeflag: tar.TypeReg, Name: d.name, Size: d.size, Mode: containerDiskMode, Uid: containerDiskUID, Gid: containerDiskUID, ModTime: d.mtime}
	if err := tw.WriteHeader(dir); err != nil {
		return cw.n, err
	}
	if err := tw.WriteHeader(file); err != nil {
		return cw.n, err
	}
	if _, err := io.Copy(tw, io.NewSectionReader(d.f, 0, d.size)); err != nil {
		return cw.n, err
	}
	err := tw.Close()
	return cw.n, err
}
