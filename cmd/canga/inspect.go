package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cangallo/canga/qcow2"
)

type digestCmd struct {
	Files []string `arg:"" name:"FILE" help:"Disk images (qcow2 with their backing chain, or raw)."`
	JSON  bool     `name:"json" help:"Print one JSON document."`
}

func (c *digestCmd) Run(e *env) error {
	failed := 0
	doc := digestDoc{Version: jsonVersion, Images: []digestItem{}}
	for _, name := range c.Files {
		d, err := qcow2.OpenFile(name)
		if err != nil {
			fmt.Fprintf(e.stderr, "canga: %v\n", err)
			doc.Images = append(doc.Images, digestItem{File: name, Error: err.Error()})
			failed++
			continue
		}
		bar := e.newProgress(filepath.Base(name), d.Size())
		id, err := qcow2.Digest(e.ctx, d, qcow2.ScanOptions{Progress: bar.set})
		bar.done(err == nil)
		d.Close()
		if err != nil {
			fmt.Fprintf(e.stderr, "canga: %s: %v\n", name, err)
			doc.Images = append(doc.Images, digestItem{File: name, Error: err.Error()})
			failed++
			continue
		}
		if c.JSON {
			doc.Images = append(doc.Images, digestItem{File: name, ID: id})
			continue
		}
		fmt.Fprintf(e.stdout, "%s  %s\n", id, name)
	}
	if c.JSON {
		if err := writeJSON(e, doc); err != nil {
			return err
		}
	}
	if failed > 0 {
		return &exitError{code: 1}
	}
	return nil
}

type infoCmd struct {
	File string `arg:"" name:"FILE" help:"Disk image."`
	JSON bool   `name:"json" help:"Print one JSON document (qemu-img info --output=json's keys)."`
}

// imageInfo has qemu-img info --output=json's keys, so scripts written for
// qemu-img keep working.
type imageInfo struct {
	Version             int             `json:"version"` // canga's schema version; the rest are qemu-img's keys
	Filename            string          `json:"filename"`
	Format              string          `json:"format"`
	VirtualSize         int64           `json:"virtual-size"`
	ActualSize          int64           `json:"actual-size"`
	ClusterSize         int64           `json:"cluster-size,omitempty"`
	BackingFilename     string          `json:"backing-filename,omitempty"`
	FullBackingFilename string          `json:"full-backing-filename,omitempty"`
	BackingFormat       string          `json:"backing-filename-format,omitempty"`
	DirtyFlag           bool            `json:"dirty-flag"`
	FormatSpecific      *formatSpecific `json:"format-specific,omitempty"`
}

type formatSpecific struct {
	Type string      `json:"type"`
	Data qcow2Detail `json:"data"`
}

type qcow2Detail struct {
	Compat               string   `json:"compat"`
	CompressionType      string   `json:"compression-type"`
	LazyRefcounts        bool     `json:"lazy-refcounts"`
	RefcountBits         int      `json:"refcount-bits"`
	Corrupt              bool     `json:"corrupt"`
	ExtendedL2           bool     `json:"extended-l2"`
	Bitmaps              bool     `json:"bitmaps,omitempty"`
	IncompatibleFeatures []string `json:"incompatible-features"`
	CompatibleFeatures   []string `json:"compatible-features"`
	AutoclearFeatures    []string `json:"autoclear-features"`
}

func (c *infoCmd) Run(e *env) error {
	f, err := qcow2.OpenRegular(c.File)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	info := imageInfo{Version: jsonVersion, Filename: c.File, Format: qcow2.FormatRaw, VirtualSize: (fi.Size() + 511) &^ 511, ActualSize: fi.Size()}
	if n, ok := allocatedBytes(fi); ok {
		info.ActualSize = n
	}
	h, err := qcow2.ReadHeader(f, fi.Size())
	if err == nil {
		// What qemu-img info refuses to open, info refuses too.
		err = qcow2.ValidateTables(f, fi.Size(), h)
	}
	switch {
	case errors.Is(err, qcow2.ErrNotQcow2):
	case err != nil:
		return fmt.Errorf("%s: %w", c.File, err)
	default:
		info.Format = qcow2.FormatQcow2
		info.VirtualSize = h.VirtualSize()
		info.ClusterSize = h.ClusterSize()
		info.DirtyFlag = h.IncompatibleFeatures&qcow2.IncompatDirty != 0
		if h.BackingFile != "" {
			info.BackingFilename = h.BackingFile
			info.FullBackingFilename = h.BackingFile
			if dir := filepath.Dir(c.File); !filepath.IsAbs(h.BackingFile) && dir != "." {
				// Joined as qemu joins them, without cleaning "..".
				info.FullBackingFilename = dir + "/" + h.BackingFile
			}
			info.BackingFormat = h.BackingFormat
		}
		d := qcow2Detail{
			Compat:               "0.10",
			CompressionType:      string(h.Compression()),
			LazyRefcounts:        h.CompatibleFeatures&qcow2.CompatLazyRefcounts != 0,
			RefcountBits:         h.RefcountBits(),
			Corrupt:              h.IncompatibleFeatures&qcow2.IncompatCorrupt != 0,
			ExtendedL2:           h.ExtendedL2(),
			Bitmaps:              h.Bitmaps,
			IncompatibleFeatures: featureNames(h, 0, h.IncompatibleFeatures),
			CompatibleFeatures:   featureNames(h, 1, h.CompatibleFeatures),
			AutoclearFeatures:    featureNames(h, 2, h.AutoclearFeatures),
		}
		if h.Version == 3 {
			d.Compat = "1.1"
		}
		info.FormatSpecific = &formatSpecific{Type: "qcow2", Data: d}
	}
	if c.JSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "    ")
		return enc.Encode(info)
	}
	w := e.stdout
	fmt.Fprintf(w, "image: %s\nfile format: %s\n", info.Filename, info.Format)
	fmt.Fprintf(w, "virtual size: %s (%d bytes)\n", humanSize(info.VirtualSize), info.VirtualSize)
	fmt.Fprintf(w, "disk size: %s\n", humanSize(info.ActualSize))
	if info.ClusterSize != 0 {
		fmt.Fprintf(w, "cluster_size: %d\n", info.ClusterSize)
	}
	if info.BackingFilename != "" {
		fmt.Fprintf(w, "backing file: %s", info.BackingFilename)
		if info.FullBackingFilename != info.BackingFilename {
			fmt.Fprintf(w, " (actual path: %s)", info.FullBackingFilename)
		}
		fmt.Fprintln(w)
		if info.BackingFormat != "" {
			fmt.Fprintf(w, "backing file format: %s\n", info.BackingFormat)
		}
	}
	if fs := info.FormatSpecific; fs != nil {
		d := fs.Data
		fmt.Fprintf(w, "Format specific information:\n")
		fmt.Fprintf(w, "    compat: %s\n    compression type: %s\n    lazy refcounts: %t\n    refcount bits: %d\n    corrupt: %t\n    extended l2: %t\n",
			d.Compat, d.CompressionType, d.LazyRefcounts, d.RefcountBits, d.Corrupt, d.ExtendedL2)
		for _, f := range []struct {
			name string
			list []string
		}{{"incompatible features", d.IncompatibleFeatures}, {"compatible features", d.CompatibleFeatures}, {"autoclear features", d.AutoclearFeatures}} {
			if len(f.list) > 0 {
				fmt.Fprintf(w, "    %s: %s\n", f.name, strings.Join(f.list, ", "))
			}
		}
	}
	return nil
}

// knownFeatures names the feature bits qemu defines, for images without a
// feature name table.
var knownFeatures = map[[2]uint8]string{
	{0, 0}: "dirty bit", {0, 1}: "corrupt bit", {0, 2}: "external data file",
	{0, 3}: "compression type", {0, 4}: "extended L2 entries",
	{1, 0}: "lazy refcounts",
	{2, 0}: "bitmaps", {2, 1}: "raw external data",
}

func featureNames(h *qcow2.Header, typ uint8, bits uint64) []string {
	names := []string{}
	for bit := range 64 {
		if bits&(1<<bit) == 0 {
			continue
		}
		name := h.FeatureNameOf(typ, uint8(bit))
		if name == "" {
			name = knownFeatures[[2]uint8{typ, uint8(bit)}]
		}
		if name == "" {
			name = fmt.Sprintf("bit %d", bit)
		}
		names = append(names, name)
	}
	return names
}

// humanSize prints sizes the way qemu-img does: binary units, 3 digits.
func humanSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, units[i])
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, units[i])
	}
	return fmt.Sprintf("%.2f %s", v, units[i])
}
