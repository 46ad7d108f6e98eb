package index

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Limits on what a document may make us build. yaml.v3 does not expand
// aliases when decoding to a Node, but cleanNode does, so a few lines of
// nested aliases could otherwise ask for billions of nodes. A document
// without aliases has fewer nodes than bytes, so a budget of its size plus
// maxNodes never refuses one.
const (
	maxNodes = 1 << 20
	maxDepth = 1000
)

// YAML tags as yaml.v3 reports them for plain scalars.
const (
	tagStr  = "!!str"
	tagInt  = "!!int"
	tagNull = "!!null"
	tagMap  = "!!map"
	tagTime = "!!timestamp"
)

type budget struct{ left, total int }

// newBudget allows maxNodes plus extra nodes.
func newBudget(extra int) *budget { return &budget{left: maxNodes + extra, total: maxNodes + extra} }

var errNotOneDocument = errors.New("more than one YAML document")

// decodeOne parses data as exactly one YAML document and returns its root
// node. Trailing documents are refused: whatever follows the first
// "---" would otherwise be signed and then ignored.
func decodeOne(data []byte) (root *yaml.Node, line int, err error) {
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

// deref follows an alias to the node it names.
func deref(n *yaml.Node) (*yaml.Node, error) {
	for hops := 0; n != nil && n.Kind == yaml.AliasNode; hops++ {
		if hops > maxDepth {
			return nil, errors.New("alias chain too long")
		}
		n = n.Alias
	}
	if n == nil {
		return nil, errors.New("alias to nothing")
	}
	return n, nil
}

// isNull reports whether n is an empty value (`key:`, `~`, `null`).
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == tagNull
}

// cleanNode returns a deep copy of n that can be written back and read
// again to the same thing: aliases expanded (anchors outside a copied
// subtree would dangle), anchors, comments, positions and presentation
// styles dropped (yaml.v3 does not round-trip them byte for byte), and
// mapping keys checked to be unique scalars.
func cleanNode(n *yaml.Node, b *budget) (*yaml.Node, error) {
	return clean(n, b, 0)
}

func clean(n *yaml.Node, b *budget, depth int) (*yaml.Node, error) {
	n, err := deref(n)
	if err != nil {
		return nil, err
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxDepth)
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
			if seen[k.Value] {
				return nil, fmt.Errorf("line %d: duplicate key %s", n.Content[i].Line, quote(k.Value))
			}
			seen[k.Value] = true
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

// decimal reads a plain YAML integer written in decimal, as canga and
// Ruby write them; hex, octal, floats and quoted numbers are refused so
// that a size means one thing only.
func decimal(n *yaml.Node) (int64, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != tagInt || n.Value == "" {
		return 0, errors.New("want a decimal integer")
	}
	for i := 0; i < len(n.Value); i++ {
		if c := n.Value[i]; c < '0' || c > '9' {
			return 0, fmt.Errorf("want a non-negative decimal integer, have %s", quote(n.Value))
		}
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("integer %s out of range", quote(n.Value))
	}
	return v, nil
}

// str reads a scalar as the text it was written as. Unquoted values that
// YAML would read as numbers or booleans (os: 16.04) stay text.
func str(n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", errors.New("want a string")
	}
	if isNull(n) {
		return "", nil
	}
	return n.Value, nil
}

// Node constructors for Marshal. A !!str tag makes yaml.v3 quote text that
// would otherwise read as another type.
func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tagStr, Value: s}
}

func intNode(v int64) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tagInt, Value: strconv.FormatInt(v, 10)}
}

func mapNode() *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Tag: tagMap}
}

func addPair(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, strNode(key), v)
}
