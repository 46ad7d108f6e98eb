// Package config is canga's home (SPEC §3): the directory chosen by
// --home, CANGA_HOME or ~/.cangallo ([Home]), its config.yaml ([Load],
// created with the default repository on first use) and the repositories
// it configures ([Config.Repo], [Config.SearchOrder], [Config.AddRepo]).
// Resolving image names across those repositories is package repo's
// work; this package knows nothing of indexes or blobs.
//
// Config (see [Load]): unknown keys are errors (a misspelt
// allowed_signers must not silently turn signature checks off), except
// Cangallo's type: local|remote; a repository without path lives in
// HOME/NAME; two repositories may not share a path; url must be http or
// https; a missing default_repo means "default". Two more top-level keys
// are the defaults of canga sign and verify, as git's user.signingKey and
// gpg.ssh.allowedSignersFile: signing_key ([Config.SigningKey]) and
// allowed_signers ([Config.AllowedSigners]), paths like a repository's.
package config
