package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Sentinel errors. An error of this package wraps at most one of them.
var (
	// ErrNotFound: the repository, tag, manifest or blob does not exist.
	ErrNotFound = errors.New("registry: not found")
	// ErrUnauthorized: no credentials, wrong credentials, or access denied
	// (HTTP 401 and 403).
	ErrUnauthorized = errors.New("registry: unauthorized")
	// ErrTooLarge: a manifest or a small blob is bigger than the cap the
	// caller or this package sets.
	ErrTooLarge = errors.New("registry: content too large")
	// ErrTLS: the TLS connection failed (unknown authority, wrong name,
	// expired certificate), or the registry answered in plain HTTP where
	// plain HTTP is not allowed.
	ErrTLS = errors.New("registry: TLS failure")
	// ErrCorrupt: content does not match its descriptor (digest, size, a
	// body cut short or too long, a wrong Content-Range).
	ErrCorrupt = errors.New("registry: content does not match its descriptor")
	// ErrInvalidReference: a reference, host, repository name, tag or
	// digest is malformed.
	ErrInvalidReference = errors.New("registry: invalid reference")
)

// errPlainHTTP explains the one TLS failure users cause most often.
var errPlainHTTP = errors.New("the registry answered in plain HTTP; allow that with --plain-http if the network is trusted")

// classify wraps err with the sentinel that describes it, if any. It keeps
// err in the chain, so errors.As still finds oras-go's errors.
func classify(err error) error {
	if err == nil {
		return nil
	}
	for _, s := range []error{ErrNotFound, ErrUnauthorized, ErrTooLarge, ErrTLS, ErrCorrupt, ErrInvalidReference} {
		if errors.Is(err, s) {
			return err
		}
	}
	var resp *errcode.ErrorResponse
	switch {
	case errors.Is(err, errdef.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, errdef.ErrSizeExceedsLimit):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return fmt.Errorf("%w: no credentials (log in first): %w", ErrUnauthorized, err)
	case errors.Is(err, http.ErrSchemeMismatch):
		return fmt.Errorf("%w: %w: %w", ErrTLS, errPlainHTTP, err)
	case isTLS(err):
		return fmt.Errorf("%w: %w", ErrTLS, err)
	case errors.As(err, &resp):
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w: %w", ErrUnauthorized, err)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		}
	case errors.Is(err, content.ErrMismatchedDigest), errors.Is(err, content.ErrTrailingData),
		errors.Is(err, content.ErrInvalidDescriptorSize):
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return err
}

func isTLS(err error) bool {
	var (
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &record) || errors.As(err, &authority) ||
		errors.As(err, &hostname) || errors.As(err, &invalid)
}
