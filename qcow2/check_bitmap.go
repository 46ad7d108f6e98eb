package qcow2

// The persistent dirty bitmaps: the extension, the directory and the
// bitmap tables.

import (
	"encoding/binary"
	"fmt"
)

// Limits and masks of qemu's block/qcow2-bitmap.c.
const (
	checkMaxBitmaps       = 65535     // QCOW2_MAX_BITMAPS
	checkMaxBitmapDir     = 64 << 20  // QCOW2_MAX_BITMAP_DIRECTORY_SIZE
	checkBmeMaxTableSize  = 0x8000000 // entries
	checkBmeMaxPhysSize   = 0x20000000
	checkBmeReservedMask  = 0xff000000000001fe
	checkBmeReservedFlags = 0xfffffffc
	checkBmeFlagInUse     = 1
	checkBmeMaxNameSize   = 1023
)

type checkBitmap struct {
	tableOffset uint64
	tableSize   uint32
}

// readBitmapsExtension finds the bitmaps extension, which qemu only heeds
// when the bitmaps autoclear bit says that it is consistent.
func (c *checker) readBitmapsExtension() error {
	h := c.hdr
	if !h.Bitmaps || h.AutoclearFeatures&AutoclearBitmaps == 0 {
		return nil
	}
	// The extensions lie in the first cluster; past the end of the file
	// it reads as zeros, which end them.
	buf := make([]byte, min(c.cs, c.fileSize))
	if err := c.readZ(buf, 0); err != nil {
		return err
	}
	end := uint64(len(buf))
	if h.BackingFileOffset != 0 && h.BackingFileOffset < end {
		end = h.BackingFileOffset
	}
	be := binary.BigEndian
	for off := uint64(h.HeaderLength); off+8 <= end; {
		typ, n := be.Uint32(buf[off:]), uint64(be.Uint32(buf[off+4:]))
		off += 8
		if typ == extEnd || n > end-off {
			return nil
		}
		if typ != extBitmaps {
			off += (n + 7) &^ 7
			continue
		}
		if n != 24 {
			return corruptf("bitmaps extension: invalid length %d", n)
		}
		d := buf[off : off+24]
		nb := be.Uint32(d[0:])
		switch {
		case be.Uint32(d[4:]) != 0:
			return corruptf("bitmaps extension: reserved field is not zero")
		case nb > checkMaxBitmaps:
			return corruptf("bitmaps extension: %d bitmaps exceed the maximum of %d", nb, checkMaxBitmaps)
		case nb == 0:
			return corruptf("bitmaps extension with zero bitmaps")
		}
		c.bitmapDir.size = be.Uint64(d[8:])
		c.bitmapDir.offset = be.Uint64(d[16:])
		if c.bitmapDir.offset%uint64(c.cs) != 0 {
			return corruptf("bitmaps extension: invalid bitmap directory offset %#x", c.bitmapDir.offset)
		}
		if c.bitmapDir.size > checkMaxBitmapDir {
			return corruptf("bitmaps extension: bitmap directory size %d exceeds %d", c.bitmapDir.size, checkMaxBitmapDir)
		}
		c.nbBitmaps = int(nb)
		return nil
	}
	return nil
}

// loadBitmaps reads the bitmap directory (qemu's bitmap_list_load). qemu
// refuses to open an image whose directory is broken, so this is an error.
func (c *checker) loadBitmaps() error {
	if c.nbBitmaps == 0 {
		return nil
	}
	want := c.nbBitmaps
	size := c.bitmapDir.size
	if size == 0 {
		return corruptf("bitmap directory size is zero")
	}
	if c.bitmapDir.offset > uint64(checkMaxOffset)-size {
		return corruptf("bitmap directory offset %#x invalid", c.bitmapDir.offset)
	}
	// The directory is at most 64 MiB; reading only what lies in the file
	// keeps memory bounded by the file as well.
	dir := make([]byte, min(size, uint64(max(0, c.fileSize-int64(c.bitmapDir.offset)))))
	if err := c.readZ(dir, int64(c.bitmapDir.offset)); err != nil {
		return err
	}
	var entry [24]byte
	at := func(off uint64) []byte { // past the end of the file: zeros
		clear(entry[:])
		if off < uint64(len(dir)) {
			copy(entry[:], dir[off:])
		}
		return entry[:]
	}
	be := binary.BigEndian
	off := uint64(0)
	for off < size {
		if off+24 > size {
			return corruptf("broken bitmap directory")
		}
		if len(c.bitmaps) == want {
			return corruptf("more bitmaps found than specified in header extension")
		}
		e := at(off)
		b := checkBitmap{tableOffset: be.Uint64(e[0:]), tableSize: be.Uint32(e[8:])}
		flags := be.Uint32(e[12:])
		typ, gran := e[16], e[17]
		nameSize := uint64(be.Uint16(e[18:]))
		extra := uint64(be.Uint32(e[20:]))
		next := off + (24+nameSize+extra+7)&^7
		if next > size {
			return corruptf("broken bitmap directory")
		}
		if extra != 0 {
			return corruptf("bitmap extra data is not supported")
		}
		phys := uint64(b.tableSize) << c.bits
		if b.tableSize == 0 || b.tableOffset == 0 || b.tableOffset%uint64(c.cs) != 0 ||
			b.tableSize > checkBmeMaxTableSize || gran > 31 || gran < 9 ||
			flags&checkBmeReservedFlags != 0 || nameSize > checkBmeMaxNameSize || typ != 1 ||
			phys > checkBmeMaxPhysSize ||
			(flags&checkBmeFlagInUse == 0 && c.hdr.Size&^511 > (phys*8)<<gran) {
			return corruptf("bitmap %d doesn't satisfy the constraints", len(c.bitmaps))
		}
		c.bitmaps = append(c.bitmaps, b)
		off = next
	}
	if len(c.bitmaps) != want {
		return corruptf("less bitmaps found than specified in header extension")
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
						if e&checkBmeReservedMask != 0 || off != 0 && (e&1 != 0 || off%uint64(c.cs) != 0) {
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
