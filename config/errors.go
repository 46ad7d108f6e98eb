package config

import (
	"errors"
	"fmt"

	"github.com/cangallo/canga/internal/yamlnode"
)

// Sentinel errors, for callers that branch with [errors.Is].
var (
	// ErrConfig: config.yaml is malformed or names things that do not
	// exist.
	ErrConfig = errors.New("config: invalid config")
	// ErrExists is returned when adding a repository whose name is taken.
	ErrExists = errors.New("config: already exists")
	// ErrNotFound: no repository by that name is configured.
	ErrNotFound = errors.New("config: no such repository")
)

// ConfigError reports a malformed config.yaml. It matches [ErrConfig].
type ConfigError struct {
	File string
	Line int // 0 when unknown
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("config: %s: line %d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("config: %s: %s", e.File, e.Msg)
}

func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

// notFoundError names the repository that is not configured. It matches
// [ErrNotFound].
type notFoundError struct{ name string }

func (e *notFoundError) Error() string { return "config: no repository " + quote(e.name) }

func (e *notFoundError) Is(target error) bool { return target == ErrNotFound }

// quote quotes s for an error message, cut short.
func quote(s string) string { return yamlnode.Quote(s) }
