package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cangallo/canga/qcow2"
)

type checkCmd struct {
	File       string `arg:"" name:"FILE" help:"qcow2 image."`
	JSON       bool   `name:"json" help:"Print one JSON document (qemu-img check --output=json's keys)."`
	NoBacking  bool   `name:"no-backing" help:"Do not open the backing chain: check the image's own metadata even if its backing file is missing or unusable (qemu-img check 'json:{...,\"backing\":null}')."`
	ForceShare bool   `name:"force-share" short:"U" help:"Accepted for qemu-img check compatibility: canga takes no lock on the image, and the backing chain is still opened."`
}

// checkReport has qemu-img check --output=json's keys and omits the
// counts that are zero, as qemu does (check-errors is always there).
type checkReport struct {
	Version            int    `json:"version"` // canga's schema version; the rest are qemu-img's keys
	Filename           string `json:"filename"`
	Format             string `json:"format"`
	CheckErrors        int64  `json:"check-errors"`
	ImageEndOffset     int64  `json:"image-end-offset,omitempty"`
	Corruptions        int64  `json:"corruptions,omitempty"`
	Leaks              int64  `json:"leaks,omitempty"`
	TotalClusters      int64  `json:"total-clusters,omitempty"`
	AllocatedClusters  int64  `json:"allocated-clusters,omitempty"`
	FragmentedClusters int64  `json:"fragmented-clusters,omitempty"`
	CompressedClusters int64  `json:"compressed-clusters,omitempty"`
}

// Exit statuses of qemu-img check, which scripts test.
const (
	checkExitFailed      = 1  // the check could not be completed
	checkExitCorrupt     = 2  // corruptions found
	checkExitLeaks       = 3  // only leaks found
	checkExitUnsupported = 63 // the format has no checks (raw)
)

func (c *checkCmd) Run(e *env) error {
	f, err := qcow2.OpenRegular(c.File)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	res, err := qcow2.Check(f, fi.Size())
	if errors.Is(err, qcow2.ErrNotQcow2) {
		// qemu-img probes such a file as raw, which has no checks.
		return &exitError{code: checkExitUnsupported, err: fmt.Errorf("%s: this image format (raw) does not support checks", c.File)}
	}
	if err != nil {
		return &exitError{code: checkExitFailed, err: fmt.Errorf("%s: check failed: %w", c.File, err)}
	}
	// qemu-img check opens the backing chain before it checks an image,
	// and fails when it cannot: a missing backing file or an unknown
	// backing format is exit status 1 and no report, -U or not.
	if !c.NoBacking {
		if err := qcow2.CheckChain(c.File); err != nil {
			var le *qcow2.LayerError
			if errors.As(err, &le) && le.Name == c.File {
				err = le.Err // named below
			}
			return &exitError{code: checkExitFailed, err: fmt.Errorf("%s: could not open backing file: %w", c.File, err)}
		}
	}

	// Like qemu-img, findings go to stderr so that stdout holds only the
	// summary or the JSON document.
	if err := res.WriteMessages(e.stderr); err != nil {
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "    ")
		err = enc.Encode(checkReport{
			Version:            jsonVersion,
			Filename:           c.File,
			Format:             qcow2.FormatQcow2,
			CheckErrors:        res.CheckErrors,
			ImageEndOffset:     res.ImageEndOffset,
			Corruptions:        res.Corruptions,
			Leaks:              res.Leaks,
			TotalClusters:      res.TotalClusters,
			AllocatedClusters:  res.AllocatedClusters,
			FragmentedClusters: res.FragmentedClusters,
			CompressedClusters: res.CompressedClusters,
		})
	} else {
		err = res.WriteSummary(e.stdout)
	}
	if err != nil {
		return err
	}

	switch {
	case res.CheckErrors > 0:
		fmt.Fprintf(e.stderr, "canga: %s: check failed\n", c.File)
		return &exitError{code: checkExitFailed}
	case res.Corruptions > 0:
		return &exitError{code: checkExitCorrupt}
	case res.Leaks > 0:
		return &exitError{code: checkExitLeaks}
	}
	return nil
}
