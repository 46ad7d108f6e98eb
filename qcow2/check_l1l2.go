package qcow2

// The L1 and L2 tables, active and of snapshots, and the clusters they
// map; entries are decoded by the codec of l2entry.go.

import (
	"encoding/binary"
	"fmt"
)

// checkL1 counts an L1 table, its L2 tables and the clusters they map
// (qemu's check_refcounts_l1 and check_refcounts_l2). For the active table
// it also gathers the allocation statistics and checks the OFLAG_COPIED
// flags against the stored refcounts (qemu's check_oflag_copied).
func (c *checker) checkL1(off uint64, size uint32, active bool) error {
	if size == 0 {
		return nil
	}
	// Entries past the end of the file read as zeros, which map nothing:
	// skip them, so that the work is bounded by the file too.
	entries := c.entriesInFile(off, int64(size), 8)
	if err := c.spend(&c.l1Work, c.l1Limit, entries); err != nil {
		return err
	}
	c.inc(off, int64(size)*8)
	if off > uint64(checkMaxOffset)-uint64(size)*8 {
		// qemu's read of such a table fails and aborts the check.
		return fmt.Errorf("qcow2: check: L1 table at %#x: offset out of range", off)
	}
	for done := int64(0); done < entries; {
		n := min(entries-done, int64(len(c.l1buf))/8)
		buf := c.l1buf[:n*8]
		if err := c.readZ(buf, int64(off)+done*8); err != nil {
			return err
		}
		for i := range n {
			e := l1Entry(binary.BigEndian.Uint64(buf[i*8:]))
			if err := c.checkL1Entry(done+i, e, active); err != nil {
				return err
			}
		}
		done += n
	}
	return nil
}

func (c *checker) checkL1Entry(index int64, e l1Entry, active bool) error {
	if e == 0 {
		return nil
	}
	if e.reservedBits() != 0 {
		c.corrupt("ERROR found L1 entry with reserved bits set: %x", uint64(e))
	}
	l2off := e.tableOffset()
	c.inc(l2off, c.cs)
	if l2off&uint64(c.cs-1) != 0 {
		c.corrupt("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", l2off)
	}
	// Entries past the end of the file read as zeros and map nothing.
	entrySize := c.hdr.l2EntryBytes()
	n := c.entriesInFile(l2off, c.cs/entrySize, entrySize)
	if err := c.spend(&c.l2Work, c.l2Limit, n); err != nil {
		return err
	}
	if n > 0 {
		if err := c.readZ(c.l2[:n*entrySize], int64(l2off)); err != nil {
			return err
		}
		c.checkL2(n, active)
	}
	if active && l2off != 0 {
		rc, err := c.stored(int64(l2off >> c.bits))
		switch {
		case err == errCheckRefblock:
			// Reported by the comparison; qemu skips the entry.
		case err != nil:
			return err
		case (rc == 1) != e.copied():
			c.res.Corruptions++
			c.oflagFinding("ERROR OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", index, uint64(e), rc)
		}
		if n > 0 {
			if err := c.checkCopied(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkL2 counts the clusters that the first entries of the L2 table in
// c.l2 map.
func (c *checker) checkL2(entries int64, active bool) {
	var next uint64
	for i := range entries {
		e, bitmap := readL2(c.l2, i, c.ext)
		kind := e.kind(c.ext)
		if kind != clusterCompressed && e.reservedBits() != 0 {
			c.corrupt("ERROR found l2 entry with reserved bits set: %x", uint64(e))
		}
		switch kind {
		case clusterCompressed:
			if e.copied() {
				c.corrupt("ERROR: coffset=0x%x: copied flag must never be set for compressed clusters", e.compressedOffset(c.bits))
				e &^= flagCopied
			}
			if bitmap != 0 {
				c.corrupt("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%x", i, uint64(e))
				continue
			}
			coff, n := e.compressedRange(c.bits)
			c.inc(uint64(coff), n)
			if active {
				c.res.AllocatedClusters++
				c.res.CompressedClusters++
				// qemu counts every compressed cluster as fragmented.
				c.res.FragmentedClusters++
			}
		case clusterZeroAlloc, clusterNormal:
			off := uint64(e.hostOffset())
			if bitmap.alloc()&bitmap.zeros() != 0 {
				c.corrupt("ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap", off)
			}
			if off&uint64(c.cs-1) != 0 {
				data := !e.zero()
				if c.ext {
					data = bitmap.alloc() != 0
				}
				if data {
					c.corrupt("ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.", off)
				} else {
					c.corrupt("ERROR offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", off)
				}
			}
			if active {
				c.res.AllocatedClusters++
				if next != 0 && off != next {
					c.res.FragmentedClusters++
				}
				next = off + uint64(c.cs)
			}
			c.inc(off, c.cs)
		case clusterUnallocated:
			if bitmap.alloc() != 0 {
				c.corrupt("ERROR: Unallocated cluster has non-zero subcluster allocation map")
			}
		}
	}
}

// checkCopied compares the OFLAG_COPIED flags of the data clusters of the
// active L2 table in c.l2 with their stored refcounts: the flag must be set
// exactly when the refcount is 1.
func (c *checker) checkCopied(entries int64) error {
	for i := range entries {
		e, _ := readL2(c.l2, i, c.ext)
		if k := e.kind(c.ext); k != clusterNormal && k != clusterZeroAlloc {
			continue
		}
		rc, err := c.stored(e.hostOffset() >> c.bits)
		if err == errCheckRefblock {
			continue // reported by the comparison; qemu skips the entry
		}
		if err != nil {
			return err
		}
		if (rc == 1) != e.copied() {
			c.res.Corruptions++
			c.oflagFinding("ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", uint64(e), rc)
		}
	}
	return nil
}
