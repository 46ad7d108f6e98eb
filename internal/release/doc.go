// Package release holds the tests of canga's distribution: make dist
// builds the same bytes twice, from two copies of the source; its .deb
// installs into a clean root and runs; the reading, digest, conversion and
// repository commands build for darwin/arm64 and windows/amd64. There is
// no code here: scripts/dist.sh and scripts/deb.sh do the work.
package release
