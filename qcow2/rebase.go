package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// File is what [SetBacking] rewrites: a file open for reading and writing.
type File interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// SetBacking changes the backing file name and format recorded in the
// qcow2 image f of size bytes, in place, without touching its data: what
// `qemu-img rebase -u` does. An empty backingFile removes the backing file;
// an empty backingFormat leaves the format to be probed. Header extensions
// canga does not know (bitmaps, feature names, future ones) are kept.
//
// The header, its extensions and the name must fit in the first cluster,
// as qemu requires; SetBacking refuses otherwise, before writing anything.
// The new first cluster is written in one write and synced; on file
// systems that write the first 4 KiB atomically (all common ones, for the
// page the header lives in) a crash leaves either the old or the new
// header.
func SetBacking(f File, size int64, backingFile, backingFormat string) error {
	h, err := ReadHeader(f, size)
	if err != nil {
		return err
	}
	if backingFile == "" && backingFormat != "" {
		return errors.New("qcow2: a backing format needs a backing file")
	}
	if len(backingFile) > maxBackingNameLen {
		return fmt.Errorf("qcow2: backing file name of %d bytes is longer than %d", len(backingFile), maxBackingNameLen)
	}
	if len(backingFormat) > maxBackingFormatLen {
		return fmt.Errorf("qcow2: backing format %q is too long", backingFormat)
	}
	cs := h.ClusterSize()
	old := make([]byte, min(cs, size))
	if _, err := f.ReadAt(old, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("qcow2: read header: %w", err)
	}
	exts, oldEnd, err := rawExtensions(h, old)
	if err != nil {
		return err
	}

	be := binary.BigEndian
	buf := make([]byte, cs)
	copy(buf, old[:h.HeaderLength])
	off := int(h.HeaderLength)
	put := func(typ uint32, data []byte) error {
		need := off + 8 + (len(data)+7)&^7
		if need > len(buf) {
			return fmt.Errorf("qcow2: header extensions do not fit in the %d-byte header cluster", cs)
		}
		be.PutUint32(buf[off:], typ)
		be.PutUint32(buf[off+4:], uint32(len(data)))
		copy(buf[off+8:], data)
		off = need
		return nil
	}
	if backingFormat != "" {
		if err := put(extBackingFormat, []byte(backingFormat)); err != nil {
			return err
		}
	}
	for _, e := range exts {
		if e.Type == extBackingFormat {
			continue
		}
		if err := put(e.Type, e.Data); err != nil {
			return err
		}
	}
	if off+8 > len(buf) {
		return fmt.Errorf("qcow2: header extensions do not fit in the %d-byte header cluster", cs)
	}
	off += 8 // end of extensions: zeros
	var nameOff uint64
	if backingFile != "" {
		if off+len(backingFile) > len(buf) {
			return fmt.Errorf("qcow2: backing file name of %d bytes does not fit in the header cluster: %d bytes are free", len(backingFile), len(buf)-off)
		}
		nameOff = uint64(off)
		copy(buf[off:], backingFile)
		off += len(backingFile)
	}
	be.PutUint64(buf[8:], nameOff)
	be.PutUint32(buf[16:], uint32(len(backingFile)))

	// Write what changed and clear what the old header used beyond it.
	end := max(off, oldEnd)
	nh, err := ReadHeader(byteReaderAt(buf[:end]), size)
	if err != nil {
		return fmt.Errorf("qcow2: internal error: the new header does not parse: %w", err)
	}
	if nh.BackingFile != backingFile || nh.BackingFormat != backingFormat {
		return errors.New("qcow2: internal error: the new header does not say what was asked")
	}
	if _, err := f.WriteAt(buf[:end], 0); err != nil {
		return fmt.Errorf("qcow2: write header: %w", err)
	}
	return f.Sync()
}

// rawExtensions returns the header extensions of the first cluster as
// stored, and where the header's used bytes (extensions, backing name)
// end.
func rawExtensions(h *Header, buf []byte) ([]Extension, int, error) {
	be := binary.BigEndian
	off := int(h.HeaderLength)
	end := len(buf)
	if h.BackingFileOffset != 0 && int(h.BackingFileOffset) < end {
		end = int(h.BackingFileOffset)
	}
	var exts []Extension
	for off+8 <= end {
		typ := be.Uint32(buf[off:])
		n := int(be.Uint32(buf[off+4:]))
		off += 8
		if typ == extEnd {
			break
		}
		if n > end-off {
			return nil, 0, corruptf("header extension %#x runs past the header area", typ)
		}
		exts = append(exts, Extension{Type: typ, Data: append([]byte(nil), buf[off:off+n]...)})
		off += (n + 7) &^ 7
	}
	used := off
	if h.BackingFileOffset != 0 {
		used = max(used, int(h.BackingFileOffset)+int(h.BackingFileSize))
	}
	return exts, used, nil
}

type byteReaderAt []byte

func (b byteReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		clear(p)
		return len(p), nil
	}
	n := copy(p, b[off:])
	clear(p[n:])
	return len(p), nil
}
