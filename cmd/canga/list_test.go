package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/cangallo/canga/index"
)

// TestJSONList: the streamed list is byte for byte what json.Encoder with
// writeJSON's indent writes for the whole listDoc.
func TestJSONList(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	nanos := time.Date(1, 12, 31, 23, 59, 59, 123456700, time.UTC)
	for _, items := range [][]listItem{
		{},
		{{Repo: "a", ID: "sha256:1", Tags: []string{}, Created: &nanos}},
		{{Repo: "a", ID: "sha256:1", Tags: []string{"x<y>&z"}, Created: &now, Description: "d\n\"q\""}, {Repo: "b", Tags: []string{}, Present: true}},
		{{Repo: "r", ID: "sha256:2", Tags: []string{"a", "b", "c"}, Parent: "sha256:1", Blob: "sha256:3", BlobSize: -5, VirtualSize: 1 << 40,
			Description: "\x00\x01\x1f\x7f \b\f\r\t \\ é ☃ 😀 \u2028 \u2029 \xff\xfe \xe2\x80", OS: "<os>"}},
	} {
		var want, got bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if err := enc.Encode(listDoc{Version: jsonVersion, Images: items}); err != nil {
			t.Fatal(err)
		}
		l := newJSONList(&got)
		for i := range items {
			if err := l.item(&items[i]); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.close(); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("got\n%s\nwant\n%s", got.String(), want.String())
		}
	}
}

// TestTable: the two-pass table is what text/tabwriter made of the same
// rows, as list printed it before.
func TestTable(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	old := now.Add(-50 * time.Hour)
	for _, items := range [][]listItem{
		{},
		{{Repo: "default", ID: "sha256:0123456789abcdef0123", Tags: []string{}, Present: true}},
		{
			{Repo: "default", ID: "sha256:0123456789abcdef0123", Tags: []string{"ubuntu:16.04", "a"}, Parent: "sha256:x", Created: &old, VirtualSize: 1 << 30, BlobSize: 12345, Description: "ünïcødé ☃ description"},
			{Repo: "remote-with-long-name", ID: "sha256:fedcba9876543210", Tags: []string{}, Created: &now, Description: ""},
		},
	} {
		var want, got bytes.Buffer
		tw := tabwriter.NewWriter(&want, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tSIZE\tBLOB\tCREATED\tDESCRIPTION")
		for i := range items {
			it := &items[i]
			flags := []byte("  ")
			if it.Parent != "" {
				flags[0] = '^'
			}
			if !it.Present {
				flags[1] = '*'
			}
			names := it.Tags
			if len(names) == 0 {
				names = []string{index.ShortID(it.ID)}
			}
			age := "-"
			if it.Created != nil {
				age = humanAge(now.Sub(*it.Created))
			}
			for _, n := range names {
				fmt.Fprintf(tw, "%s%s:%s\t%s\t%s\t%s\t%s\n", flags, it.Repo, n, humanSize(it.VirtualSize), humanSize(it.BlobSize), age, it.Description)
			}
		}
		tw.Flush()
		tb := newTable(&got, now)
		for i := range items {
			tb.measure(&items[i])
		}
		for i := range items {
			tb.print(&items[i])
		}
		if err := tb.close(); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("got\n%q\nwant\n%q", got.String(), want.String())
		}
	}
}
