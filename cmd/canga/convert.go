package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cangallo/canga/internal/atomicfile"
	"github.com/cangallo/canga/qcow2"
)

// parseSize reads sizes the way qemu-img does: bytes, or a number with a
// K, M, G, T, P or E suffix (powers of 1024; a trailing "B" or "iB" is
// fine).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "i")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch strings.ToUpper(t[n-1:]) {
		case "K":
			mult = 1 << 10
		case "M":
			mult = 1 << 20
		case "G":
			mult = 1 << 30
		case "T":
			mult = 1 << 40
		case "P":
			mult = 1 << 50
		case "E":
			mult = 1 << 60
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || t == "" {
		return 0, fmt.Errorf("invalid size %q: use bytes or a K, M, G or T suffix", s)
	}
	f := v * float64(mult)
	if f > 1<<62 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(f), nil
}

// clusterSizeFlag is a --cluster-size value; empty means the default,
// which depends on the compression.
type clusterSizeFlag string

func (c clusterSizeFlag) bytes() (int64, error) {
	if c == "" {
		return 0, nil
	}
	n, err := parseSize(string(c))
	if err != nil {
		return 0, fmt.Errorf("--cluster-size: %w", err)
	}
	if n < 512 || n > 2<<20 || n&(n-1) != 0 {
		return 0, fmt.Errorf("--cluster-size %s: must be a power of two from 512 to 2M", c)
	}
	return n, nil
}

type createCmd struct {
	File        string          `arg:"" name:"FILE" help:"The qcow2 image to create."`
	Size        string          `arg:"" optional:"" name:"SIZE" help:"Virtual size, with a K, M, G or T suffix; defaults to the backing file's."`
	Backing     string          `short:"b" name:"backing" placeholder:"IMG_OR_FILE" help:"Backing file of the new image, or an image in a repository."`
	ClusterSize clusterSizeFlag `name:"cluster-size" placeholder:"N" help:"Cluster size (default 64K)."`
}

func (c *createCmd) Run(e *env) error {
	cs, err := c.ClusterSize.bytes()
	if err != nil {
		return err
	}
	opt := qcow2.ConvertOptions{ClusterSize: cs}
	var size int64 = -1
	if c.Size != "" {
		if size, err = parseSize(c.Size); err != nil {
			return err
		}
	}
	if c.Backing != "" {
		name, path, err := e.backingFile(c.Backing, c.File)
		if err != nil {
			return err
		}
		b, err := qcow2.OpenFile(path)
		if err != nil {
			return fmt.Errorf("backing file: %w", err)
		}
		opt.BackingFile, opt.BackingFormat = name, formatOf(b)
		if size < 0 {
			size = b.Size()
		}
		b.Close()
	}
	if size < 0 {
		return errors.New("SIZE is required without --backing")
	}
	return atomicfile.Write(c.File, 0o644, func(f *os.File) error {
		return qcow2.Create(f, size, opt)
	})
}

// backingFile resolves a --backing argument: a file, or else an image in a
// repository. It returns the name to write into the header (as given for
// files, as qemu-img does; absolute for repository blobs) and a path to
// open it by.
func (e *env) backingFile(arg, image string) (name, path string, err error) {
	path = arg
	if !filepath.IsAbs(arg) {
		path = filepath.Join(filepath.Dir(image), arg)
	}
	if _, err := os.Stat(path); err == nil {
		return arg, path, nil
	}
	if blob, err := e.resolveBlobPath(arg); err == nil {
		return blob, blob, nil
	}
	if _, err := os.Stat(arg); err == nil && !filepath.IsAbs(arg) {
		return "", "", fmt.Errorf("backing file %s: names are relative to the new image's directory, like qemu's; use %s", arg, mustAbs(arg))
	}
	return "", "", fmt.Errorf("backing file %s: no such file or image", arg)
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func formatOf(d qcow2.Disk) string {
	if _, ok := d.(*qcow2.Image); ok {
		return qcow2.FormatQcow2
	}
	return qcow2.FormatRaw
}

// compression is what -c and --compression ask for: --compression names
// the type and implies -c; -c alone means zlib, as with qemu-img.
func compression(compress bool, name string) qcow2.Compression {
	if name == "" && compress {
		return qcow2.CompressionZlib
	}
	return qcow2.Compression(name)
}

type convertCmd struct {
	Src         string          `arg:"" name:"SRC" help:"Source image (qcow2 with its backing chain, or raw)."`
	Dst         string          `arg:"" name:"DST" help:"Output file."`
	SrcFormat   string          `short:"f" name:"source-format" enum:",qcow2,raw" default:"" help:"Source format (default: probed)."`
	Format      string          `short:"O" name:"output-format" enum:"qcow2,raw" default:"qcow2" help:"Output format: qcow2 or raw."`
	Compress    bool            `short:"c" help:"Compress the output's clusters (zlib unless --compression says otherwise)."`
	Compression string          `name:"compression" enum:",zlib,zstd" default:"" help:"Compression type: zlib or zstd (implies -c)."`
	Backing     string          `short:"B" name:"backing" placeholder:"FILE" help:"Write only what differs from FILE, which becomes the output's backing file."`
	ClusterSize clusterSizeFlag `name:"cluster-size" placeholder:"N" help:"Cluster size of a qcow2 output (default 64K; 256K with zstd)."`
}

func (c *convertCmd) Run(e *env) error {
	cs, err := c.ClusterSize.bytes()
	if err != nil {
		return err
	}
	var opts []qcow2.Option
	if c.SrcFormat != "" {
		opts = append(opts, qcow2.WithFormat(c.SrcFormat))
	}
	src, err := qcow2.OpenFile(c.Src, opts...)
	if err != nil {
		return err
	}
	defer src.Close()
	bar := e.newProgress(filepath.Base(c.Dst), src.Size())
	if c.Format == qcow2.FormatRaw {
		if c.Compress || c.Compression != "" || c.Backing != "" {
			return errors.New("-c, --compression and --backing need a qcow2 output")
		}
		err := atomicfile.Write(c.Dst, 0o644, func(f *os.File) error {
			return qcow2.ConvertRaw(e.ctx, f, src, qcow2.ScanOptions{Progress: bar.set})
		})
		bar.done(err == nil)
		return err
	}
	opt := qcow2.ConvertOptions{ClusterSize: cs, Progress: bar.set, Compression: compression(c.Compress, c.Compression)}
	if c.Backing != "" {
		name, path, err := e.backingFile(c.Backing, c.Dst)
		if err != nil {
			return err
		}
		base, err := qcow2.OpenFile(path)
		if err != nil {
			return fmt.Errorf("backing file: %w", err)
		}
		defer base.Close()
		opt.Base, opt.BackingFile, opt.BackingFormat = base, name, formatOf(base)
	}
	err = atomicfile.Write(c.Dst, 0o644, func(f *os.File) error {
		_, err := qcow2.Convert(e.ctx, f, src, opt)
		return err
	})
	bar.done(err == nil)
	return err
}
