// Package layers has no code: its test checks canga's package graph
// against the layering that STYLE describes.
package layers
