package qcow2

// The snapshot table.

import (
	"encoding/binary"
	"fmt"
	"math"
)

// checkNameKeep is how many bytes of a snapshot ID or name are kept for
// messages.
const checkNameKeep = 128

type checkSnapshot struct {
	l1Offset uint64
	l1Size   uint32
	id, name string
}

// readSnapshots reads the snapshot table the way qemu-img check does
// (qcow2_check_read_snapshot_table without repairs): a table qemu cannot
// read fails the check.
func (c *checker) readSnapshots() error {
	nb := int64(c.hdr.NbSnapshots)
	if nb == 0 {
		return nil
	}
	start := int64(c.hdr.SnapshotsOffset)
	off := start
	var length int64
	var h [snapshotHeaderSize]byte
	c.snapshots = make([]checkSnapshot, 0, nb) // nb <= 65536, checked by ReadHeader
	name := make([]byte, 1<<16)
	extras := make([]int64, 0, nb)
	for i := range nb {
		length = (length + 7) &^ 7
		off = (off + 7) &^ 7
		if err := c.readZ(h[:], off); err != nil {
			return fmt.Errorf("qcow2: check: failed to read snapshot table: %w", err)
		}
		off += snapshotHeaderSize
		be := binary.BigEndian
		sn := checkSnapshot{l1Offset: be.Uint64(h[0:]), l1Size: be.Uint32(h[8:])}
		idSize := int64(be.Uint16(h[12:]))
		nameSize := int64(be.Uint16(h[14:]))
		extra := int64(be.Uint32(h[36:]))
		if extra > maxSnapshotExtra {
			return corruptf("too much extra metadata in snapshot table entry %d", i)
		}
		off += extra
		str := func(n int64) (string, error) {
			b := name[:n]
			if err := c.readZ(b, off); err != nil {
				return "", fmt.Errorf("qcow2: check: failed to read snapshot table: %w", err)
			}
			off += n
			return string(b[:min(n, checkNameKeep)]), nil
		}
		var err error
		if sn.id, err = str(idSize); err != nil {
			return err
		}
		if sn.name, err = str(nameSize); err != nil {
			return err
		}
		length += snapshotHeaderSize + extra + idSize + nameSize
		if length > maxSnapshotsSize || off-start > math.MaxInt32 {
			return corruptf("snapshot table is too big")
		}
		c.snapshots = append(c.snapshots, sn)
		extras = append(extras, extra)
	}
	c.snapshotsSize = off - start
	// Version 3 requires the extra data that holds the 64-bit VM state
	// size and the disk size.
	if c.hdr.Version >= 3 {
		for i, extra := range extras {
			if extra < 16 {
				c.corrupt("ERROR snapshot table entry %d is incomplete", i)
			}
		}
	}
	return nil
}
