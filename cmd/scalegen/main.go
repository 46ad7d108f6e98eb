// Command scalegen writes a large repository for bench/scale.sh: see
// package internal/scalerepo. It prints shell assignments naming images
// to try commands on.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cangallo/canga/internal/scalerepo"
)

func main() {
	n := flag.Int("images", 100_000, "number of images")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: scalegen [-images N] DIR\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	res, err := scalerepo.Generate(flag.Arg(0), scalerepo.Options{Images: *n})
	if err != nil {
		fmt.Fprintf(os.Stderr, "scalegen: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("IMAGES=%d\nTAGS=%d\nINDEX_SIZE=%d\nTAG=%s\nTAG_TARGET=%s\nDEEPEST=%s\nDEPTH=%d\nLEAF=%s\nPARENT=%s\n",
		res.Images, res.Tags, res.IndexSize, res.Tag, res.TagTarget, res.Deepest, len(res.DeepestChain), res.Leaf, res.Parent)
}
