// Package registry is canga's OCI registry transport: it moves manifests and
// blobs to and from registries that speak the OCI distribution API
// (CNCF distribution, Harbor, GHCR, Zot, ...), as SPEC.md §8 describes.
// It knows nothing of canga's stores: the caller builds the manifests,
// opens the files a push reads, hashes every byte a pull writes, and
// decides what enters a repository.
//
// The pieces:
//
//   - [ParseReference] reads oci://HOST[:PORT]/NAME[:TAG|@sha256:HEX].
//   - [NewClient] makes a [Client] for one registry host: TLS with the
//     system roots plus [Options.CAFile]; plain HTTP only with
//     [Options.PlainHTTP], or for localhost, 127.0.0.1 and [::1] when the
//     registry there does not speak TLS (as Docker does for loopback).
//     Credentials come from Docker's config.json ($DOCKER_CONFIG or
//     ~/.docker/config.json, credential helpers included), which [Login]
//     and [Logout] write the way `docker login` does.
//   - [Client.Repository] gives a [Repository], which resolves tags,
//     fetches manifests and small blobs with a size cap and a digest
//     check, streams a blob from an offset ([Repository.OpenBlob], for
//     resumed pulls), lists tags, pushes an image ([Repository.Push]: only
//     what the registry lacks, optionally cross-mounted from other
//     repositories) and attaches and lists referrers such as signatures
//     ([Repository.PushReferrer], [Repository.Referrers]), through the
//     referrers API or, where the registry lacks it (distribution 2.8),
//     the OCI referrers tag schema.
//
// Errors wrap one of the sentinels ([ErrNotFound], [ErrUnauthorized],
// [ErrTooLarge], [ErrTLS], [ErrCorrupt], [ErrInvalidReference]) where one
// applies, together with the error of oras-go (errcode.ErrorResponse for
// a registry's answer), so callers can branch with [errors.Is] and still
// show what the registry said.
//
// The protocol work is oras-go's (oras.land/oras-go/v2): remote.Repository
// for the API, auth.Client for tokens and basic authentication,
// credentials for config.json, oras.CopyGraph for pushes.
package registry
