package qcow2

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// MaxChainDepth is how many backing files [OpenFile] follows by default.
// qemu has no limit and exhausts memory on a loop; real chains are short.
const MaxChainDepth = 256

// Formats a file can be opened as.
const (
	FormatQcow2 = "qcow2"
	FormatRaw   = "raw"
)

// ErrBackingLoop means a backing chain leads back to one of its own files.
var ErrBackingLoop = errors.New("qcow2: backing chain loops")

// WithFormat opens the file as format ("qcow2" or "raw") instead of
// probing it.
func WithFormat(format string) Option { return func(o *options) { o.format = format } }

// BackingResolver decides where [OpenFile] finds the backing file that
// image names, and in which format to open it.
type BackingResolver func(image, name, format string) (path, resolvedFormat string, err error)

// WithBackingResolver replaces the default resolution of backing file names
// (relative to the naming image's directory, as qemu does). A repository
// uses it to allow only sibling blobs.
func WithBackingResolver(r BackingResolver) Option { return func(o *options) { o.resolve = r } }

// WithMaxDepth limits how many backing files [OpenFile] follows.
func WithMaxDepth(n int) Option { return func(o *options) { o.maxDepth = n } }

// OpenFile opens the disk image at name with its backing chain. The format
// is probed unless [WithFormat] is given: a file that starts with the qcow2
// magic is qcow2, anything else is raw. Backing file names are resolved
// against the directory of the image that names them, as qemu does, and the
// backing format extension is honoured; it is probed only when absent.
func OpenFile(name string, opts ...Option) (Disk, error) {
	o := options{maxDepth: MaxChainDepth}
	for _, opt := range opts {
		opt(&o)
	}
	// One cache serves the whole chain, so its memory is bounded however
	// long the chain is.
	o.tables = newCache(defaultCacheBytes, 4)
	return openChain(name, o.format, &o, nil)
}

// The errors of openChain name the file they are about once, however deep
// in the chain it is: a chain of 256 files must not give 256 prefixes.

func openChain(name, format string, o *options, above []os.FileInfo) (d Disk, err error) {
	if len(above) > o.maxDepth {
		return nil, &LayerError{Name: name, Err: fmt.Errorf("qcow2: backing chain deeper than %d files", o.maxDepth)}
	}
	f, err := OpenRegular(name)
	if err != nil {
		return nil, err // *PathError names the file
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	fail := func(err error) (Disk, error) { return nil, &LayerError{Name: name, Err: err} }
	for _, up := range above {
		if os.SameFile(up, fi) {
			return fail(fmt.Errorf("%w: the file is its own ancestor", ErrBackingLoop))
		}
	}
	size := fi.Size()
	if fi.Mode()&os.ModeDevice != 0 {
		if size, err = f.Seek(0, 2); err != nil {
			return fail(err)
		}
	}
	if format == "" {
		format = FormatRaw
		var magic [4]byte
		if n, _ := f.ReadAt(magic[:], 0); n == 4 && string(magic[:]) == Magic {
			format = FormatQcow2
		}
	}
	switch format {
	case FormatRaw:
		r := NewRaw(f, size)
		r.closer, r.name = f, name
		return r, nil
	case FormatQcow2:
	default:
		return fail(unsupportedf("format %q", format))
	}

	hdr, err := ReadHeader(f, size)
	if err != nil {
		return fail(err)
	}
	if err := ValidateTables(f, size, hdr); err != nil {
		return fail(err)
	}
	var backing Disk
	if hdr.BackingFile != "" {
		resolve := o.resolve
		if resolve == nil {
			resolve = defaultResolver
		}
		path, bf, err := resolve(name, hdr.BackingFile, hdr.BackingFormat)
		if err != nil {
			return fail(err)
		}
		backing, err = openChain(path, bf, o, append(above, fi))
		if err != nil {
			var le *LayerError
			if errors.As(err, &le) {
				return nil, err
			}
			return fail(fmt.Errorf("backing file: %w", err))
		}
	}
	img, err := openWithHeader(f, size, hdr, &options{backing: backing, tables: o.tables})
	if err != nil {
		if backing != nil {
			backing.Close()
		}
		return fail(err)
	}
	img.name = name
	img.closer = f
	return img, nil
}

func defaultResolver(image, name, format string) (string, string, error) {
	if format != "" && format != FormatQcow2 && format != FormatRaw {
		return "", "", unsupportedf("backing format %q", format)
	}
	path, err := backingPath(image, name)
	return path, format, err
}

// OpenRegular opens a disk image file for reading: a regular file or a
// device. Anything else (a directory, a FIFO, a socket) is refused, and
// without blocking: opening a FIFO for reading would wait for a writer
// forever.
func OpenRegular(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() && fi.Mode()&os.ModeDevice == 0 {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: name, Err: errors.New("not a regular file or a device")}
	}
	// Reads of regular files and block devices ignore O_NONBLOCK.
	return f, nil
}

// backingPath resolves a backing file name as qemu does for plain files.
// Protocol names ("nbd:", "json:{...}", "http://") are refused: canga
// opens files only.
func backingPath(image, backing string) (string, error) {
	if i := strings.IndexByte(backing, ':'); i >= 0 && !strings.Contains(backing[:i], "/") {
		return "", unsupportedf("backing file %q is not a plain file name", backing)
	}
	if filepath.IsAbs(backing) {
		return backing, nil
	}
	return filepath.Join(filepath.Dir(image), backing), nil
}

// CheckChain opens the backing chain of the image at name the way
// qemu-img check does before it checks the image: every backing file is
// opened, in the format its image names or, if none, the one it probes
// as, and a qcow2 backing file must pass the checks qemu makes when it
// opens an image for checking (those of [ReadHeader] and of its bitmaps,
// reading past the end of the file as zeros, as qemu does). A missing or
// unreadable backing file, an unknown backing format, a loop or a chain
// deeper than [MaxChainDepth] (or [WithMaxDepth]) is an error that names
// the file. Only the header of the image at name is read: [Check] checks
// the image itself. [WithBackingResolver] and [WithMaxDepth] apply.
func CheckChain(name string, opts ...Option) error {
	o := options{maxDepth: MaxChainDepth}
	for _, opt := range opts {
		opt(&o)
	}
	resolve := o.resolve
	if resolve == nil {
		resolve = defaultResolver
	}
	format := o.format
	var above []os.FileInfo
	for depth := 0; ; depth++ {
		if depth > o.maxDepth {
			return &LayerError{Name: name, Err: fmt.Errorf("qcow2: backing chain deeper than %d files", o.maxDepth)}
		}
		h, fi, err := checkOpenLayer(name, format, depth > 0, above)
		if err != nil || h == nil || h.BackingFile == "" {
			return err
		}
		path, bf, err := resolve(name, h.BackingFile, h.BackingFormat)
		if err != nil {
			return &LayerError{Name: name, Err: err}
		}
		above = append(above, fi)
		name, format = path, bf
	}
}

// checkOpenLayer opens one file of a chain for CheckChain and returns its
// header, or nil for a raw file. Bitmaps are checked when check is set.
func checkOpenLayer(name, format string, check bool, above []os.FileInfo) (*Header, os.FileInfo, error) {
	f, err := OpenRegular(name)
	if err != nil {
		return nil, nil, err // *PathError names the file
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*Header, os.FileInfo, error) { return nil, nil, &LayerError{Name: name, Err: err} }
	for _, up := range above {
		if os.SameFile(up, fi) {
			return fail(fmt.Errorf("%w: the file is its own ancestor", ErrBackingLoop))
		}
	}
	size := fi.Size()
	if fi.Mode()&os.ModeDevice != 0 {
		if size, err = f.Seek(0, 2); err != nil {
			return fail(err)
		}
	}
	if format == "" {
		format = FormatRaw
		var magic [4]byte
		if n, _ := f.ReadAt(magic[:], 0); n == 4 && string(magic[:]) == Magic {
			format = FormatQcow2
		}
	}
	switch format {
	case FormatRaw:
		return nil, fi, nil
	case FormatQcow2:
	default:
		return fail(unsupportedf("format %q", format))
	}
	h, err := ReadHeader(checkPadded{f, size}, math.MaxInt64)
	if err == nil && check {
		err = openBitmapsForCheck(f, size, h)
	}
	if err != nil {
		return fail(err)
	}
	return h, fi, nil
}
