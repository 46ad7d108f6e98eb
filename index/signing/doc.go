// Package signing signs and verifies index.yaml with SSH keys (SPEC §6).
//
// A signature is an armored SSHSIG ("ssh-keygen -Y sign" format, OpenSSH's
// PROTOCOL.sshsig) in the namespace [Namespace], over the exact bytes of
// index.yaml, hashed with SHA-512. Anyone can check one without canga:
//
//	ssh-keygen -Y verify -f allowed_signers -I PRINCIPAL -n canga-index -s index.yaml.sig < index.yaml
//
// Trust comes from an allowed_signers file (ssh-keygen(1), ALLOWED SIGNERS),
// read by [ParseAllowedSigners] with OpenSSH's rules: principal
// pattern-lists with '*', '?' and '!', quoted fields, and the options
// cert-authority, namespaces="..." and valid-after/valid-before="...".
// Certificates are supported: a user certificate whose CA is on a
// cert-authority line may sign, for the principals it lists that the line
// admits, while it is valid.
//
// The aim is that whatever [Verify] accepts, ssh-keygen accepts too. So the
// armor must start at its first byte (as ssh-keygen demands), RSA
// signatures must be rsa-sha2-256 or rsa-sha2-512, and a malformed
// allowed_signers line is an error even where ssh-keygen would not reach
// it. One known gap: valid-after and valid-before without a "Z" are local
// times, and OpenSSH reads them as standard (non-daylight-saving) time;
// write them in UTC ("20250101Z") to be exact everywhere.
//
// [Verify] reports the signer the way "ssh-keygen -Y find-principals" does;
// [VerifyPrincipal] checks one named principal, as "-Y verify -I" does.
// [LoadSigner] signs with a private key file, or with a key held by
// ssh-agent given its public half, as "ssh-keygen -Y sign -f" does;
// [DefaultKey] finds one when none is named: ssh-agent's only key, else
// ~/.ssh/id_ed25519, id_ecdsa or id_rsa.
//
// Every input is bounded before it is parsed: signatures to
// [MaxSignatureSize], allowed_signers files to [MaxAllowedSignersSize] and
// their lines to [MaxLineLength]; patterns are matched in polynomial time.
package signing
