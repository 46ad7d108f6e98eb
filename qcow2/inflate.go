package qcow2

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"sync"
)

// A one-shot raw deflate (RFC 1951) decoder for compressed clusters.
//
// A qcow2 compressed cluster is a complete deflate stream whose output is
// exactly one cluster, so the decoder can write straight into the caller's
// buffer and use it as the window: no sliding window, no io.Reader, no
// copying. It reads 64 bits at a time and decodes through two-level lookup
// tables, as libdeflate does.
//
// canga has its own decoder to accept and refuse exactly what qemu's zlib
// does (see inflateCluster): a stream zlib refuses makes qemu-img fail, so
// it must not get an image ID, and one zlib accepts must get one. A
// streaming decoder used as a black box cannot do that: it neither checks
// what zlib checks in the tables of the block that fills the cluster, nor
// reads on past the full cluster the way zlib does. FuzzInflate holds it to
// zlib itself. It is also about 1.8 times as fast as
// klauspost/compress/flate's pooled reader on real clusters
// (BenchmarkInflateClusters; bench/RESULTS.md): below 1.5 times, the
// library would be the better choice.

var (
	errInflateCorrupt   = errors.New("corrupt deflate stream")
	errInflateTruncated = errors.New("deflate stream ends before the cluster is full")
	errInflateShort     = errors.New("deflate stream ends early: fewer bytes than a cluster")
	// zlib, and so qemu, refuses a dynamic block without an end-of-block
	// code even when the cluster fills before one is needed; Go's
	// compress/flate does not. We side with qemu.
	errInflateNoEOB = errors.New("corrupt deflate stream: a block without an end-of-block code")
)

// Table entries: payload<<16 | extra<<12 | flags | bit length.
const (
	entLiteral  = 1 << 8  // payload is a literal byte
	entSubtable = 1 << 9  // payload is the subtable's offset, extra its bits
	entEOB      = 1 << 10 // end of block
	entInvalid  = 1 << 11 // no code maps here
	entLenMask  = 0xff

	litlenTableBits = 11
	distTableBits   = 8
	maxCodeLen      = 15
	// Worst case: a main table plus a full subtable under every prefix.
	litlenTableSize = 1<<litlenTableBits + 1<<litlenTableBits*(1<<(maxCodeLen-litlenTableBits))
	distTableSize   = 1<<distTableBits + 1<<distTableBits*(1<<(maxCodeLen-distTableBits))
)

var (
	lengthBase   = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra  = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase     = [30]uint32{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra    = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	precodeOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

// litlenEntry is the decoded meaning of literal/length symbol sym.
func litlenEntry(sym int) uint32 {
	switch {
	case sym < 256:
		return uint32(sym)<<16 | entLiteral
	case sym == 256:
		return entEOB
	case sym < 286:
		i := sym - 257
		return uint32(lengthBase[i])<<16 | uint32(lengthExtra[i])<<12
	}
	return entInvalid
}

func distEntry(sym int) uint32 {
	if sym < 30 {
		return distBase[sym]<<16 | uint32(distExtra[sym])<<12
	}
	return entInvalid
}

// inflater holds the decoding tables; it is pooled because they are large.
type inflater struct {
	litlen [litlenTableSize]uint32
	dist   [distTableSize]uint32
	lens   [288 + 32]uint8
}

var inflaterPool = sync.Pool{New: func() any { return new(inflater) }}

var fixedTables struct {
	once   sync.Once
	litlen []uint32
	dist   []uint32
}

func fixed() ([]uint32, []uint32) {
	fixedTables.once.Do(func() {
		var lens [288]uint8
		for i := range lens {
			switch {
			case i < 144:
				lens[i] = 8
			case i < 256:
				lens[i] = 9
			case i < 280:
				lens[i] = 7
			default:
				lens[i] = 8
			}
		}
		ll := make([]uint32, litlenTableSize)
		n, _ := buildTable(ll, lens[:], litlenTableBits, false, litlenEntry)
		fixedTables.litlen = ll[:n]
		var dl [32]uint8
		for i := range dl {
			dl[i] = 5
		}
		d := make([]uint32, distTableSize)
		n, _ = buildTable(d, dl[:], distTableBits, false, distEntry)
		fixedTables.dist = d[:n]
	})
	return fixedTables.litlen, fixedTables.dist
}

// buildTable fills table with the canonical Huffman code of lens and
// returns how many entries it used. Codes longer than tableBits go to
// subtables of maxLen-tableBits bits under their prefix. It refuses what
// zlib's inflate_table refuses: an over-subscribed code, and an incomplete
// one unless it is a single one-bit code and precode is false (the code
// length code must be complete). Entries no code maps to are invalid and
// one bit long, like zlib's invalid-code markers: zlib reads that bit
// before it reports the error, which matters when the input ends there.
func buildTable(table []uint32, lens []uint8, tableBits uint, precode bool, entry func(int) uint32) (int, error) {
	var count [maxCodeLen + 1]int
	maxLen := 0
	for _, l := range lens {
		count[l]++
		maxLen = max(maxLen, int(l))
	}
	count[0] = 0
	mainSize := 1 << tableBits
	if maxLen == 0 {
		// No codes at all: legal for distances of a block of literals
		// (and, in zlib, for the code length code, whose every use then
		// reads one bit as a length of zero); any other use of the table
		// is an error.
		for i := range mainSize {
			table[i] = entInvalid | 1
		}
		return mainSize, nil
	}
	left := 1
	for l := 1; l <= maxCodeLen; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return 0, errInflateCorrupt // over-subscribed
		}
	}
	if left > 0 && (precode || maxLen != 1) {
		return 0, errInflateCorrupt // incomplete
	}
	var next [maxCodeLen + 2]int
	for l := 1; l <= maxCodeLen; l++ {
		next[l+1] = next[l] + count[l]
	}
	var sorted [320]uint16
	for sym, l := range lens {
		if l != 0 {
			sorted[next[l]] = uint16(sym)
			next[l]++
		}
	}
	for i := range mainSize {
		table[i] = entInvalid | 1
	}
	used := mainSize
	subBits := uint(0)
	if maxLen > int(tableBits) {
		subBits = uint(maxLen) - tableBits
	}
	subSize := 1 << subBits
	code := 0
	i := 0
	for l := 1; l <= maxLen; l++ {
		for range count[l] {
			sym := int(sorted[i])
			i++
			rev := int(bits.Reverse16(uint16(code))) >> (16 - l)
			code++
			e := entry(sym)
			if uint(l) <= tableBits {
				e |= uint32(l)
				for j := rev; j < mainSize; j += 1 << l {
					table[j] = e
				}
				continue
			}
			prefix := rev & (mainSize - 1)
			if table[prefix]&entSubtable == 0 {
				table[prefix] = uint32(used)<<16 | uint32(subBits)<<12 | entSubtable | uint32(tableBits)
				for j := range subSize {
					table[used+j] = entInvalid | 1
				}
				used += subSize
			}
			sub := int(table[prefix] >> 16)
			e |= uint32(uint(l) - tableBits)
			for j := rev >> tableBits; j < subSize; j += 1 << (uint(l) - tableBits) {
				table[sub+j] = e
			}
		}
		code <<= 1
	}
	return used, nil
}

// bitReader reads a deflate stream 64 bits at a time. Bits past the end of
// the input read as zeros; over counts them so that using them is an error.
type bitReader struct {
	src  []byte
	pos  int
	buf  uint64
	n    uint // valid bits in buf
	over int  // zero bytes fed past the end of src
}

// refill makes at least 56 bits valid.
func (br *bitReader) refill() {
	if br.pos+8 <= len(br.src) {
		br.buf |= binary.LittleEndian.Uint64(br.src[br.pos:]) << (br.n & 63)
		br.pos += int(63-br.n) >> 3
		br.n |= 56
		return
	}
	for br.n <= 56 {
		if br.pos < len(br.src) {
			br.buf |= uint64(br.src[br.pos]) << br.n
			br.pos++
		} else {
			br.over++
		}
		br.n += 8
	}
}

func (br *bitReader) bits(n uint) uint32 {
	if br.n < n {
		br.refill()
	}
	v := uint32(br.buf & (1<<n - 1))
	br.buf >>= n
	br.n -= n
	return v
}

// entry reads the code of one symbol and returns its entry in table,
// whose main part has tableBits bits, going through a subtable if need be.
func (br *bitReader) entry(table []uint32, tableBits uint) uint32 {
	e := table[br.buf&(1<<tableBits-1)]
	if e&entSubtable != 0 {
		br.buf >>= tableBits
		br.n -= tableBits
		e = table[e>>16+uint32(br.buf&(1<<(e>>12&0xf)-1))]
	}
	br.buf >>= e & 63
	br.n -= uint(e & entLenMask)
	return e
}

// overrun reports whether decoding used bits that the input does not have.
func (br *bitReader) overrun() bool { return br.over*8 > int(br.n) }

// inflateCluster decodes the raw deflate stream src into dst and succeeds
// exactly when qemu's zlib inflate does (qemu's qcow2_zlib_decompress: one
// inflate call with Z_FINISH into a cluster-sized buffer, accepted once the
// buffer is full, whether or not the stream ended there): what follows in
// src is ignored, and a stream that ends before dst is full is an error.
//
// zlib does not stop the moment the buffer is full. It goes on through what
// needs no output: the code of the next literal or match (but not the copy
// that would need room), and, when a block ended right there, the headers
// of the blocks that follow, with their Huffman tables. An error found on
// the way fails the call; input that runs out there does not. So does
// inflateCluster.
func inflateCluster(dst, src []byte) error {
	f := inflaterPool.Get().(*inflater)
	defer inflaterPool.Put(f)
	br := bitReader{src: src}
	o, err := f.inflate(&br, dst)
	if err == errInflateTruncated && o == len(dst) {
		return nil // zlib waits for more input, with a full buffer
	}
	return err
}

// inflate decodes blocks into dst until it is full and, after that, until
// zlib would stop (see inflateCluster). It returns how many bytes it
// wrote.
func (f *inflater) inflate(br *bitReader, dst []byte) (int, error) {
	o := 0
	for {
		br.refill()
		final := br.buf&1 != 0
		typ := br.buf >> 1 & 3
		br.buf >>= 3
		br.n -= 3
		if br.overrun() {
			return o, errInflateTruncated
		}
		var litlen, dist []uint32
		switch typ {
		case 0:
			var stop bool
			var err error
			if o, stop, err = storedBlock(br, dst, o); err != nil || stop {
				return o, err
			}
		case 1:
			litlen, dist = fixed()
		case 2:
			var err error
			if litlen, dist, err = f.dynamicTables(br); err != nil {
				return o, err
			}
		default:
			return o, errInflateCorrupt
		}
		if typ != 0 {
			var stop bool
			var err error
			if o, stop, err = decodeBlock(br, dst, o, litlen, dist); err != nil || stop {
				return o, err
			}
		}
		if final {
			if o == len(dst) {
				return o, nil
			}
			return o, errInflateShort
		}
	}
}

// storedBlock copies a stored block's bytes to dst[o:]. It stops (zlib
// would wait for room) when the block has more bytes than dst has room
// for, or when dst was full already and the block is not empty.
func storedBlock(br *bitReader, dst []byte, o int) (int, bool, error) {
	// Drop the rest of the partial byte; the bytes still in buf come
	// right before br.pos (counting the zero bytes fed past the end).
	br.buf >>= br.n & 7
	br.n &^= 7
	start := br.pos + br.over - int(br.n>>3)
	src := br.src
	if start+4 > len(src) {
		return o, false, errInflateTruncated
	}
	length := int(binary.LittleEndian.Uint16(src[start:]))
	if uint16(length) != ^binary.LittleEndian.Uint16(src[start+2:]) {
		return o, false, errInflateCorrupt
	}
	start += 4
	n := min(length, len(dst)-o)
	if start+n > len(src) {
		return o, false, errInflateTruncated
	}
	copy(dst[o:], src[start:start+n])
	*br = bitReader{src: src, pos: min(start+length, len(src))}
	if start+length > len(src) {
		br.over = start + length - len(src)
	}
	return o + n, n < length, nil
}

// dynamicTables reads a dynamic block's code lengths and builds its
// tables. It checks what zlib checks in zlib's order, and finds that the
// input ran out (errInflateTruncated) where zlib would wait for more, so
// that after the output is full the outcome is zlib's too.
func (f *inflater) dynamicTables(br *bitReader) ([]uint32, []uint32, error) {
	br.refill()
	nlit := int(br.bits(5)) + 257
	ndist := int(br.bits(5)) + 1
	nclen := int(br.bits(4)) + 4
	if br.overrun() {
		return nil, nil, errInflateTruncated
	}
	if nlit > 286 || ndist > 30 {
		return nil, nil, errInflateCorrupt
	}
	var clens [19]uint8
	for i := range nclen {
		clens[precodeOrder[i]] = uint8(br.bits(3))
	}
	if br.overrun() {
		return nil, nil, errInflateTruncated
	}
	// The precode is at most 7 bits long: one direct table.
	var pre [1 << 7]uint32
	if _, err := buildTable(pre[:], clens[:], 7, true, func(sym int) uint32 { return uint32(sym) << 16 }); err != nil {
		return nil, nil, err
	}
	lens := f.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		if br.n < 7+7 {
			br.refill()
		}
		e := pre[br.buf&(1<<7-1)]
		br.buf >>= e & entLenMask
		br.n -= uint(e & entLenMask)
		// An invalid entry means an empty precode, whose every use zlib
		// reads as a length of zero.
		sym := e >> 16
		if e&entInvalid != 0 {
			sym = 0
		}
		var rep int
		var val uint8
		switch {
		case sym < 16:
			if br.overrun() {
				return nil, nil, errInflateTruncated
			}
			lens[i] = uint8(sym)
			i++
			continue
		case sym == 16:
			rep = 3 + int(br.bits(2))
			if i > 0 {
				val = lens[i-1]
			}
		case sym == 17:
			rep = 3 + int(br.bits(3))
		default:
			rep = 11 + int(br.bits(7))
		}
		if br.overrun() {
			return nil, nil, errInflateTruncated
		}
		if sym == 16 && i == 0 || i+rep > len(lens) {
			return nil, nil, errInflateCorrupt
		}
		for range rep {
			lens[i] = val
			i++
		}
	}
	if lens[256] == 0 {
		return nil, nil, errInflateNoEOB
	}
	n, err := buildTable(f.litlen[:], lens[:nlit], litlenTableBits, false, litlenEntry)
	if err != nil {
		return nil, nil, err
	}
	litlen := f.litlen[:n]
	if n, err = buildTable(f.dist[:], lens[nlit:], distTableBits, false, distEntry); err != nil {
		return nil, nil, err
	}
	return litlen, f.dist[:n], nil
}

// decodeBlock decodes the symbols of one Huffman block into dst[o:]. It
// returns at the end of the block, or with stop set where zlib stops once
// dst is full: at a literal or match that has no room left (a match cut
// short by the end of dst is one). Before that, with dst full, it decodes
// the next symbol as zlib does, and returns at the end of the block when
// that symbol ends it.
func decodeBlock(br *bitReader, dst []byte, o int, litlen, dist []uint32) (int, bool, error) {
	// The bit reader's state lives in locals, in registers, and goes back
	// into br at every return (a deferred closure would keep it in memory).
	src := br.src
	buf, n, pos := br.buf, br.n, br.pos
	// The main tables as arrays: their lookups need no bounds check.
	// Shift counts are masked with 63 (they are all smaller): Go must
	// otherwise make a shift by 64 or more give 0, at a cost per shift.
	lt := (*[1 << litlenTableBits]uint32)(litlen)
	dt := (*[1 << distTableBits]uint32)(dist)
	for {
		// The fast path: while 8 bytes of input and the longest match
		// plus the slack of copying it 8 bytes at a time fit, nothing
		// needs checking but the codes themselves (no bits past the end
		// of the input are read: over is 0).
		for pos+8 <= len(src) && o+fastRoom <= len(dst) {
			buf |= binary.LittleEndian.Uint64(src[pos:]) << (n & 63)
			pos += int(63-n) >> 3
			n |= 56
			e := lt[buf&(1<<litlenTableBits-1)]
			if e&entSubtable != 0 {
				buf >>= litlenTableBits
				n -= litlenTableBits
				e = litlen[e>>16+uint32(buf&(1<<(e>>12&0xf)-1))]
			}
			buf >>= e & 63
			n -= uint(e & entLenMask)
			if e&entLiteral != 0 {
				// Up to two more literals before the next refill: at
				// least 41 bits are left, and a direct code takes at most
				// litlenTableBits (11) of them.
				dst[o] = byte(e >> 16)
				o++
				e = lt[buf&(1<<litlenTableBits-1)]
				if e&entLiteral == 0 {
					continue
				}
				buf >>= e & 63
				n -= uint(e & entLenMask)
				dst[o] = byte(e >> 16)
				o++
				e = lt[buf&(1<<litlenTableBits-1)]
				if e&entLiteral == 0 {
					continue
				}
				buf >>= e & 63
				n -= uint(e & entLenMask)
				dst[o] = byte(e >> 16)
				o++
				continue
			}
			if e&(entEOB|entInvalid) != 0 {
				br.buf, br.n, br.pos = buf, n, pos
				if e&entInvalid != 0 {
					return o, false, errInflateCorrupt
				}
				return o, false, nil
			}
			// 56 bits were ready: enough for a length code with its extra
			// bits (20) and a distance code with its extra bits (28).
			extra := e >> 12 & 0xf
			length := int(e>>16) + int(buf&(1<<extra-1))
			buf >>= extra
			n -= uint(extra)
			d := dt[buf&(1<<distTableBits-1)]
			if d&entSubtable != 0 {
				buf >>= distTableBits
				n -= distTableBits
				d = dist[d>>16+uint32(buf&(1<<(d>>12&0xf)-1))]
			}
			buf >>= d & 63
			n -= uint(d & entLenMask)
			if d&entInvalid != 0 {
				br.buf, br.n, br.pos = buf, n, pos
				return o, false, errInflateCorrupt
			}
			dextra := d >> 12 & 0xf
			distance := int(d>>16) + int(buf&(1<<dextra-1))
			buf >>= dextra
			n -= uint(dextra)
			if distance > o {
				br.buf, br.n, br.pos = buf, n, pos
				return o, false, errInflateCorrupt // before the start of the cluster
			}
			if distance < 8 {
				copyNear(dst, o, distance, length)
				o += length
				continue
			}
			// Each 8 bytes read were written before, so overlapping
			// matches repeat as they should.
			for i, s := o, o-distance; i < o+length; i, s = i+8, s+8 {
				binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(dst[s:]))
			}
			o += length
		}
		br.buf, br.n, br.pos = buf, n, pos
		o2, stop, err := decodeSymbol(br, dst, o, litlen, dist)
		if o2 < 0 || stop || err != nil {
			return max(o2, o), stop, err
		}
		o = o2
		buf, n, pos = br.buf, br.n, br.pos
	}
}

// fastRoom is what decodeBlock's fast path needs left in dst: the longest
// match plus the slack of copying it eight bytes at a time.
const fastRoom = 258 + 8

// copyNear copies the match of length bytes at distance (below 8) back
// to dst[o:], with up to 7 bytes of slack after it (fastRoom).
func copyNear(dst []byte, o, distance, length int) {
	s := o - distance
	if distance == 1 {
		v := uint64(dst[s]) * 0x0101010101010101
		for i := 0; i < length; i += 8 {
			binary.LittleEndian.PutUint64(dst[o+i:], v)
		}
		return
	}
	for i := range length {
		dst[o+i] = dst[s+i]
	}
}

// decodeSymbol decodes one symbol near the end of the input or of dst,
// checking everything: it returns the new output position, or -1 at the
// end of the block, and stop or an error as decodeBlock does.
func decodeSymbol(br *bitReader, dst []byte, o int, litlen, dist []uint32) (int, bool, error) {
	br.refill()
	// 56 bits are ready: enough for a length code with its extra bits (20)
	// and a distance code with its extra bits (28).
	e := br.entry(litlen, litlenTableBits)
	if br.overrun() {
		return o, false, errInflateTruncated
	}
	if e&entLiteral != 0 {
		if o == len(dst) {
			return o, true, nil // no room: zlib stops here
		}
		dst[o] = byte(e >> 16)
		return o + 1, false, nil
	}
	if e&(entEOB|entInvalid) != 0 {
		if e&entInvalid != 0 {
			return o, false, errInflateCorrupt
		}
		return -1, false, nil
	}
	length := int(e>>16) + int(br.bits(uint(e>>12&0xf)))
	d := br.entry(dist, distTableBits)
	if br.overrun() {
		return o, false, errInflateTruncated
	}
	if d&entInvalid != 0 {
		return o, false, errInflateCorrupt
	}
	if o == len(dst) {
		// No room for the match: zlib stops before it reads the
		// distance's extra bits or checks the distance.
		return o, true, nil
	}
	distance := int(d>>16) + int(br.bits(uint(d>>12&0xf)))
	if br.overrun() {
		return o, false, errInflateTruncated
	}
	if distance > o {
		return o, false, errInflateCorrupt // before the start of the cluster
	}
	s := o - distance
	// Near the end of dst: a match that runs past it is cut, and zlib
	// stops there, as its output buffer is full.
	if length > len(dst)-o {
		for i := range len(dst) - o {
			dst[o+i] = dst[s+i]
		}
		return len(dst), true, nil
	}
	for i := range length {
		dst[o+i] = dst[s+i]
	}
	return o + length, false, nil
}
