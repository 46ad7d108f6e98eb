package index_test

import (
	"bytes"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cangallo/canga/index"
	"github.com/cangallo/canga/internal/scalerepo"
)

var (
	benchOnce  sync.Once
	benchBytes []byte
	benchIndex *index.Index
)

// benchIndexOf100k is the index of bench/scale.sh's repository: 100,000
// images in chains of 1 to 20, every fifth tagged, every fiftieth with a
// cangafile.
func benchIndexOf100k(b *testing.B) ([]byte, *index.Index) {
	benchOnce.Do(func() {
		ix, _, err := scalerepo.Index(scalerepo.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if benchBytes, err = ix.Marshal(); err != nil {
			b.Fatal(err)
		}
		// As the commands have it: read from index.yaml.
		if benchIndex, err = index.Parse(benchBytes); err != nil {
			b.Fatal(err)
		}
	})
	return benchBytes, benchIndex
}

// cpu reports the CPU time of the process per operation, garbage
// collection included: on a machine that other work keeps busy, wall time
// says little.
func cpu(b *testing.B, loop func()) {
	usage := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	n, start := 0, usage()
	for b.Loop() {
		loop()
		n++
	}
	b.ReportMetric(float64(usage()-start)/float64(n)/1e6, "cpu-ms/op")
}

// BenchmarkParse: the canonical reader; BenchmarkParseGeneral: the same
// bytes through the yaml.v3 node tree (the reader before this one), with
// a comment prepended so that only the general parser takes them.
func BenchmarkParse(b *testing.B) {
	data, _ := benchIndexOf100k(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	cpu(b, func() {
		if _, err := index.Parse(data); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	data, _ := benchIndexOf100k(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	cpu(b, func() {
		if _, err := index.Decode(bytes.NewReader(data), int64(len(data))); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkParseGeneral(b *testing.B) {
	data, _ := benchIndexOf100k(b)
	data = append([]byte("# not canonical\n"), data...)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	cpu(b, func() {
		if _, err := index.Parse(data); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkMarshal(b *testing.B) {
	data, ix := benchIndexOf100k(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	cpu(b, func() {
		if _, err := ix.Marshal(); err != nil {
			b.Fatal(err)
		}
	})
}
