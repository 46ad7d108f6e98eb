// Package fuzz holds fuzz targets that cross package boundaries, through
// canga's public API only. Targets of one package's internals live beside
// that package (qcow2: FuzzImage, FuzzInflate and FuzzInflateZlibStream,
// which compare the deflate decoder with zlib run by python3, FuzzCheck,
// FuzzConvertRoundTrip; index: FuzzParse, FuzzCanonical (the canonical
// reader and writer against yaml.v3); index/signing:
// FuzzParseAllowedSigners, FuzzVerify; guestfs: FuzzRunCommand; nbd:
// FuzzHandshake, FuzzRequests), each with
// a seed corpus in its testdata/fuzz directory or added at test time.
// `make fuzz` runs every target of every package for FUZZTIME.
package fuzz
