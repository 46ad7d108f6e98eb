// Package yamlnode holds the yaml.v3 node handling that index.yaml and
// config.yaml share: one document only, aliases expanded under a node
// budget (against alias bombs), unique scalar keys, and node
// constructors that keep text text. Errors are plain messages without a
// package prefix: callers put them inside their own errors, with the file
// and line.
package yamlnode

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Limits on what a document may make us build. yaml.v3 does not expand
// aliases when decoding to a Node, but Clean does, so a few lines of
// nested aliases could otherwise ask for billions of nodes. A document
// without aliases has fewer nodes than bytes, so a budget of its size plus
// MaxNodes never refuses one.
const (
	MaxNodes = 1 << 20
	MaxDepth = 1000
)

// YAML tags as yaml.v3 reports them for plain scalars.
const (
	TagStr  = "!!str"
	TagInt  = "!!int"
	TagNull = "!!null"
	TagMap  = "!!map"
	TagTime = "!!timestamp"
)

// Budget counts the nodes [Clean] may still build.
type Budget struct{ left, total int }

// NewBudget allows MaxNodes plus extra nodes.
func NewBudget(extra int) *Budget {
	return &Budget{left: MaxNodes + extra, total: MaxNodes + extra}
}

var errNotOneDocument = errors.New("more than one YAML document")

// DecodeOne parses data as exactly one YAML document and returns its root
// node. Trailing documents are refused: whatever follows the first
// "---" would otherwise be signed and then ignored. line is where the
// error is, when known.
func DecodeOne(data []byte) (root *yaml.Node, line int, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, 0, errors.New("empty document")
		}
		return nil, 0, err
	}
	var rest yaml.Node
	switch err := dec.Decode(&rest); {
	case err == nil:
		return nil, rest.Line, errNotOneDocument
	case err != io.EOF:
		return nil, 0, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, 0, errors.New("empty document")
	}
	return doc.Content[0], 0, nil
}

// Deref follows an alias to the node it names.
func Deref(n *yaml.Node) (*yaml.Node, error) {
	for hops := 0; n != nil && n.Kind == yaml.AliasNode; hops++ {
		if hops > MaxDepth {
			return nil, errors.New("alias chain too long")
		}
		n = n.Alias
	}
	if n == nil {
		return nil, errors.New("alias to nothing")
	}
	return n, nil
}

// IsNull reports whether n is an empty value (`key:`, `~`, `null`).
func IsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == TagNull
}

// Clean returns a deep copy of n that can be written back and read
// again to the same thing: aliases expanded (anchors outside a copied
// subtree would dangle), anchors, comments, positions and presentation
// styles dropped (yaml.v3 does not round-trip them byte for byte), and
// mapping keys checked to be unique scalars.
func Clean(n *yaml.Node, b *Budget) (*yaml.Node, error) {
	return clean(n, b, 0)
}

func clean(n *yaml.Node, b *Budget, depth int) (*yaml.Node, error) {
	n, err := Deref(n)
	if err != nil {
		return nil, err
	}
	if depth > MaxDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", MaxDepth)
	}
	b.left--
	if b.left < 0 {
		return nil, fmt.Errorf("more than %d YAML nodes (after expanding aliases)", b.total)
	}
	c := &yaml.Node{Kind: n.Kind, Tag: n.Tag, Value: n.Value, Style: n.Style & yaml.TaggedStyle}
	switch n.Kind {
	case yaml.ScalarNode:
		if !utf8.ValidString(n.Value) {
			return nil, errors.New("scalar is not UTF-8")
		}
		if !utf8.ValidString(n.Tag) {
			return nil, errors.New("tag is not UTF-8")
		}
		return c, nil
	case yaml.SequenceNode, yaml.DocumentNode:
		if n.Kind == yaml.DocumentNode && len(n.Content) != 1 {
			return nil, errors.New("document must hold one node")
		}
		c.Content = make([]*yaml.Node, 0, len(n.Content))
		for _, item := range n.Content {
			ci, err := clean(item, b, depth+1)
			if err != nil {
				return nil, err
			}
			c.Content = append(c.Content, ci)
		}
		return c, nil
	case yaml.MappingNode:
		if len(n.Content)%2 != 0 {
			return nil, errors.New("mapping with a key and no value")
		}
		c.Content = make([]*yaml.Node, 0, len(n.Content))
		seen := make(map[string]bool, len(n.Content)/2)
		for i := 0; i < len(n.Content); i += 2 {
			k, err := clean(n.Content[i], b, depth+1)
			if err != nil {
				return nil, err
			}
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: mapping keys must be scalars", n.Content[i].Line)
			}
			if k.Tag == TagNull && k.Value == "" {
				// An empty null key ("? " alone) would be written ''
				// and read back as an empty string.
				k.Value = "null"
			}
			if seen[k.Value] {
				return nil, fmt.Errorf("line %d: duplicate key %s", n.Content[i].Line, Quote(k.Value))
			}
			seen[k.Value] = true
			if IsNull(k) && k.Value == "" {
				// yaml.v3 writes an empty null key as '', a string: spell
				// it, so that it reads back as the null it is.
				k.Value = "~"
			}
			v, err := clean(n.Content[i+1], b, depth+1)
			if err != nil {
				return nil, err
			}
			c.Content = append(c.Content, k, v)
		}
		return c, nil
	}
	return nil, fmt.Errorf("unexpected YAML node kind %d", n.Kind)
}

// Encode writes n as YAML with two-space indents. A node yaml.v3 cannot
// encode is an error, never a panic.
func Encode(n *yaml.Node) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("cannot encode: %v", r)
		}
	}()
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Str is a string scalar. Its !!str tag makes yaml.v3 quote text that
// would otherwise read as another type.
func Str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: TagStr, Value: s}
}

// Map is an empty mapping.
func Map() *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Tag: TagMap}
}

// AddPair appends key: v to the mapping m.
func AddPair(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, Str(key), v)
}

// Quote quotes s for an error message, cut short: the string may come
// from a hostile document and need not be echoed in full.
func Quote(s string) string {
	const max = 80
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
