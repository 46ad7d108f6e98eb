package main

import (
	"bufio"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// jsonList writes `list --json`, the listDoc that writeJSON would write,
// byte for byte (TestJSONList), one item at a time and without
// reflection: the list of 100,000 images is tens of megabytes of JSON,
// which json.Encoder would build whole in memory first, and
// json.MarshalIndent took most of the command's time.
type jsonList struct {
	w   *bufio.Writer
	buf []byte
	n   int
}

func newJSONList(w io.Writer) *jsonList { return &jsonList{w: bufio.NewWriterSize(w, 64<<10)} }

func (l *jsonList) item(it *listItem) error {
	b := l.buf[:0]
	if l.n == 0 {
		b = append(b, "{\n  \"version\": "...)
		b = strconv.AppendInt(b, jsonVersion, 10)
		b = append(b, ",\n  \"images\": [\n    {\n"...)
	} else {
		b = append(b, ",\n    {\n"...)
	}
	l.n++
	b = jsonField(b, "repo", it.Repo, false)
	b = jsonField(b, "id", string(it.ID), false)
	if len(it.Tags) == 0 {
		b = append(b, "      \"tags\": [],\n"...)
	} else {
		b = append(b, "      \"tags\": [\n"...)
		for i, t := range it.Tags {
			b = append(b, "        "...)
			b = jsonString(b, t)
			if i < len(it.Tags)-1 {
				b = append(b, ',')
			}
			b = append(b, '\n')
		}
		b = append(b, "      ],\n"...)
	}
	b = jsonField(b, "parent", string(it.Parent), true)
	b = jsonField(b, "blob", string(it.Blob), true)
	b = append(b, "      \"blob-size\": "...)
	b = strconv.AppendInt(b, it.BlobSize, 10)
	b = append(b, ",\n      \"virtual-size\": "...)
	b = strconv.AppendInt(b, it.VirtualSize, 10)
	b = append(b, ",\n"...)
	if it.Created != nil {
		// time.Time's MarshalJSON; the index keeps years within 0-9999.
		b = append(b, "      \"created\": \""...)
		b = it.Created.AppendFormat(b, time.RFC3339Nano)
		b = append(b, "\",\n"...)
	}
	b = jsonField(b, "description", it.Description, true)
	b = jsonField(b, "os", it.OS, true)
	b = append(b, "      \"present\": "...)
	b = strconv.AppendBool(b, it.Present)
	b = append(b, "\n    }"...)
	l.buf = b
	_, err := l.w.Write(b)
	return err
}

func (l *jsonList) close() error {
	if l.n == 0 {
		l.w.WriteString("{\n  \"version\": " + strconv.Itoa(jsonVersion) + ",\n  \"images\": []\n}\n")
	} else {
		l.w.WriteString("\n  ]\n}\n")
	}
	return l.w.Flush()
}

// jsonField appends `      "key": "value",` and a newline; nothing for an
// empty value with omitEmpty.
func jsonField(b []byte, key, value string, omitEmpty bool) []byte {
	if omitEmpty && value == "" {
		return b
	}
	b = append(b, "      \""...)
	b = append(b, key...)
	b = append(b, "\": "...)
	b = jsonString(b, value)
	return append(b, ",\n"...)
}

// jsonString appends s as encoding/json writes a string: HTML characters,
// U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD.
func jsonString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
