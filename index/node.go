package index

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/cangallo/canga/internal/yamlnode"
	"go.yaml.in/yaml/v3"
)

// The YAML handling index.yaml shares with config.yaml lives in
// internal/yamlnode; these names keep this package's code short.
const (
	tagStr  = yamlnode.TagStr
	tagInt  = yamlnode.TagInt
	tagTime = yamlnode.TagTime
)

type budget = yamlnode.Budget

// newBudget allows yamlnode.MaxNodes plus extra nodes.
func newBudget(extra int) *budget { return yamlnode.NewBudget(extra) }

// decodeOne parses data as exactly one YAML document: whatever follows
// the first "---" would otherwise be signed and then ignored.
func decodeOne(data []byte) (root *yaml.Node, line int, err error) { return yamlnode.DecodeOne(data) }

func deref(n *yaml.Node) (*yaml.Node, error) { return yamlnode.Deref(n) }

func isNull(n *yaml.Node) bool { return yamlnode.IsNull(n) }

// cleanNode copies n so that it can be written back and read again to the
// same thing (see [yamlnode.Clean]), within the budget b.
func cleanNode(n *yaml.Node, b *budget) (*yaml.Node, error) { return yamlnode.Clean(n, b) }

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
func strNode(s string) *yaml.Node { return yamlnode.Str(s) }

func intNode(v int64) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tagInt, Value: strconv.FormatInt(v, 10)}
}

func mapNode() *yaml.Node { return yamlnode.Map() }

func encodeNode(n *yaml.Node) ([]byte, error) { return yamlnode.Encode(n) }

func addPair(m *yaml.Node, key string, v *yaml.Node) { yamlnode.AddPair(m, key, v) }
