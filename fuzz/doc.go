// Package fuzz holds fuzz targets that cross package boundaries, through
// canga's public API only. Targets of one package's internals live beside
// that package (qcow2: FuzzImage, FuzzInflate and FuzzInflateZlibStream,
// which compare the deflate decoder with zlib run by python3, FuzzCheck,
// FuzzConvertRoundTrip, FuzzSetBacking; index: FuzzParse, FuzzCanonical
// (the canonical reader and writer against yaml.v3); index/signing:
// FuzzParseAllowedSigners, FuzzVerify; guestfs: FuzzRunCommand; config:
// FuzzParse; remote: FuzzHTTPResponses, which answers the client through
// an HTTP server in the process; registry: FuzzParseReference; nbd:
// FuzzHandshake, FuzzRequests), each with
// a seed corpus in its testdata/fuzz directory or added at test time.
// Seeds are small (images of a few KiB, with 512-byte clusters) and every
// execution takes about a millisecond or less, so that a target makes
// thousands of executions a second; every crasher found is kept as a seed.
// `make fuzz` runs every target of every package for FUZZTIME and prints
// a summary line for each.
package fuzz
