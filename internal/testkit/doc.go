// Package testkit holds the helpers that the tests of several packages
// share: running the external tools that are their oracles (qemu-img,
// qemu-io, sha256sum, ssh-keygen, debugfs, python3), making and damaging
// test files, tmpfs mounts, servers on free ports, and the hostile qcow2
// images that every reader must refuse.
//
// Only tests import it (TestOnlyTestsImport checks the module). Every
// helper takes the test's [testing.TB] and fails the test, with the tool's
// output, when something it needs goes wrong: the tools are declared test
// dependencies (scripts/deps.sh installs them), so a missing one fails the
// test and is never a reason to skip it.
package testkit
