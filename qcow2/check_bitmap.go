package qcow2

// The persistent dirty bitmaps: the extension, the directory and the
// bitmap tables.

import (
	"encoding/binary"
	"fmt"
	"io"
)

// loadBitmaps reads the bitmap directory (qemu's bitmap_list_load) with
// the checks qemu makes when it opens the image, for qemu-img check too:
// a broken directory, two bitmaps of one name, or a bitmap not in use
// whose table has the wrong size is an error.
func (c *checker) loadBitmaps() error {
	ext := c.hdr.bitmaps // set by ReadHeader, which checked the extension
	if ext.nb == 0 {
		return nil
	}
	c.nbBitmaps = int(ext.nb)
	c.bitmapDir.offset, c.bitmapDir.size = ext.dirOffset, ext.dirSize
	size := ext.dirSize
	if size == 0 {
		return corruptf("bitmap directory size is zero")
	}
	if ext.dirOffset > uint64(checkMaxOffset)-size {
		return corruptf("bitmap directory offset %#x invalid", ext.dirOffset)
	}
	// The directory is at most 64 MiB; only its part inside the file is
	// read, which keeps memory bounded by the file as well. The rest reads
	// as zeros.
	dir := make([]byte, min(size, uint64(max(0, c.fileSize-int64(ext.dirOffset)))))
	if err := c.readZ(dir, int64(ext.dirOffset)); err != nil {
		return err
	}
	virtual := c.hdr.Size &^ 511
	bms, err := parseBitmapDirectory(dir, size, int(ext.nb), c.bits, virtual)
	if err != nil {
		return err
	}
	if err := checkBitmapNames(bms); err != nil {
		return err
	}
	for i := range bms {
		b := &bms[i]
		if !b.inUse() && !bitmapTableSizeValid(b, c.bits, virtual) {
			return corruptf("could not read bitmap %q: its table has %d entries, not the number its size and granularity need", b.name, b.tableSize)
		}
		c.bitmaps = append(c.bitmaps, checkBitmap{tableOffset: b.tableOffset, tableSize: b.tableSize, inUse: b.inUse()})
	}
	return nil
}

type checkBitmap struct {
	tableOffset uint64
	tableSize   uint32
	inUse       bool
}

// openBitmapsForCheck makes the bitmap checks of qemu's opening of an
// image for qemu-img check (qcow2_load_dirty_bitmaps): the directory, and
// the tables of the bitmaps not in use, which qemu loads. Past the end of
// the file, the tables read as zeros.
func openBitmapsForCheck(ra io.ReaderAt, fileSize int64, h *Header) error {
	c := &checker{ra: ra, fileSize: fileSize, hdr: h, bits: h.ClusterBits, cs: h.ClusterSize()}
	if err := c.loadBitmaps(); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for _, b := range c.bitmaps {
		if b.inUse {
			continue
		}
		n := int64(b.tableSize) * 8
		if b.tableOffset > uint64(checkMaxOffset-n) {
			return corruptf("could not read the table of a bitmap: offset %#x out of range", b.tableOffset)
		}
		// Only the entries inside the file can be wrong.
		inFile := c.entriesInFile(b.tableOffset, int64(b.tableSize), 8) * 8
		for done := int64(0); done < inFile; {
			p := buf[:min(inFile-done, int64(len(buf)))]
			if err := c.readZ(p, int64(b.tableOffset)+done); err != nil {
				return err
			}
			for j := 0; j < len(p); j += 8 {
				if e := binary.BigEndian.Uint64(p[j:]); !bitmapTableEntryValid(e, uint64(c.cs)) {
					return corruptf("could not read the table of a bitmap at %#x: invalid entry %#x", b.tableOffset, e)
				}
			}
			done += int64(len(p))
		}
	}
	return nil
}

// checkBitmaps counts the bitmap directory, the bitmap tables and the
// bitmap data clusters (qemu's qcow2_check_bitmaps_refcounts).
func (c *checker) checkBitmaps() error {
	if c.nbBitmaps == 0 {
		return nil
	}
	c.inc(c.bitmapDir.offset, int64(c.bitmapDir.size))
	for _, b := range c.bitmaps {
		entries := c.entriesInFile(b.tableOffset, int64(b.tableSize), 8)
		if err := c.spend(&c.l1Work, c.l1Limit, entries); err != nil {
			return err
		}
		c.inc(b.tableOffset, int64(b.tableSize)*8)
		if b.tableOffset > uint64(checkMaxOffset)-uint64(b.tableSize)*8 {
			return fmt.Errorf("qcow2: check: bitmap table at %#x: offset out of range", b.tableOffset)
		}
		// qemu loads the whole table and fails on its first bad entry
		// before counting any; stream it twice to do the same in bounded
		// memory.
		for pass := 0; pass < 2; pass++ {
			for done := int64(0); done < entries; {
				n := min(entries-done, int64(len(c.l1buf))/8)
				buf := c.l1buf[:n*8]
				if err := c.readZ(buf, int64(b.tableOffset)+done*8); err != nil {
					return err
				}
				for i := range n {
					e := binary.BigEndian.Uint64(buf[i*8:])
					off := e & offsetMask
					if pass == 0 {
						if e&bmeEntryReservedMask != 0 || off != 0 && (e&1 != 0 || off%uint64(c.cs) != 0) {
							return corruptf("bitmap table at %#x: invalid entry %#x", b.tableOffset, e)
						}
					} else if off != 0 {
						c.inc(off, c.cs)
					}
				}
				done += n
			}
		}
	}
	return nil
}
