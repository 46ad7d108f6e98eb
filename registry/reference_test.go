package registry

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseReference(t *testing.T) {
	good := []struct {
		in   string
		want Reference
	}{
		{"oci://registry.example.com/canga/ubuntu:16.04", Reference{Host: "registry.example.com", Name: "canga/ubuntu", Tag: "16.04"}},
		{"oci://127.0.0.1:5000/ubuntu", Reference{Host: "127.0.0.1:5000", Name: "ubuntu"}},
		{"oci://localhost/a/b/c:latest", Reference{Host: "localhost", Name: "a/b/c", Tag: "latest"}},
		{"oci://[::1]:5000/img@sha256:" + hex64, Reference{Host: "[::1]:5000", Name: "img", Digest: digest.Digest("sha256:" + hex64)}},
		{"oci://[::1]/img", Reference{Host: "[::1]", Name: "img"}},
		{"oci://Registry.Example.COM/x", Reference{Host: "Registry.Example.COM", Name: "x"}},
		{"oci://r.io/a.b_c__d-e--f/g:V_1.0-rc", Reference{Host: "r.io", Name: "a.b_c__d-e--f/g", Tag: "V_1.0-rc"}},
		{"oci://r.io/x:" + strings.Repeat("t", 128), Reference{Host: "r.io", Name: "x", Tag: strings.Repeat("t", 128)}},
	}
	for _, tc := range good {
		got, err := ParseReference(tc.in)
		if err != nil {
			t.Errorf("ParseReference(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseReference(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if s := got.String(); s != tc.in {
			t.Errorf("ParseReference(%q).String() = %q", tc.in, s)
		}
	}

	bad := []struct{ in, why string }{
		{"", "no scheme"},
		{"registry.example.com/ubuntu", "no scheme"},
		{"docker://r.io/ubuntu", `scheme "docker://"`},
		{"OCI://r.io/ubuntu", "scheme"},
		{"oci://", "no host"},
		{"oci:///ubuntu", "no host"},
		{"oci://r.io", "no repository name"},
		{"oci://r.io/", "no repository name"},
		{"oci://r.io/Ubuntu", "lower case"},
		{"oci://r.io/ubuntu/", "repository name"},
		{"oci://r.io//ubuntu", "repository name"},
		{"oci://r.io/-ubuntu", "repository name"},
		{"oci://r.io/ubu..ntu", "repository name"},
		{"oci://r.io/ubuntu:", "empty tag"},
		{"oci://r.io/ubuntu:.x", "tag"},
		{"oci://r.io/ubuntu:a/b", "repository name"},
		{"oci://r.io/x:" + strings.Repeat("t", 129), "tag"},
		{"oci://r.io/ubuntu@sha256:" + hex64[:63], "digest"},
		{"oci://r.io/ubuntu@sha256:" + strings.ToUpper(hex64), "digest"},
		{"oci://r.io/ubuntu@sha512:" + hex64 + hex64, "want sha256"},
		{"oci://r.io/ubuntu@" + hex64, "want sha256"},
		{"oci://r.io/ubuntu:1@sha256:" + hex64, "not both"},
		{"oci://r.io:0/x", "bad port"},
		{"oci://r.io:65536/x", "bad port"},
		{"oci://r.io:/x", "empty port"},
		{"oci://r.io:50a/x", "bad port"},
		{"oci://user@r.io/x", "host"},
		{"oci://r_io/x", "host"},
		{"oci://-r.io/x", "host"},
		{"oci://::1/x", "bad port"},
		{"oci://[::1/x", "closing ]"},
		{"oci://[127.0.0.1]/x", "IPv6"},
		{"oci://[::1]x/x", "junk"},
		{"oci://r.io/" + strings.Repeat("a", 260), "longer than"},
	}
	for _, tc := range bad {
		_, err := ParseReference(tc.in)
		if err == nil {
			t.Errorf("ParseReference(%q) succeeded", tc.in)
			continue
		}
		if !errors.Is(err, ErrInvalidReference) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("ParseReference(%q) = %v, want ErrInvalidReference saying %q", tc.in, err, tc.why)
		}
	}
}

func TestTagOrDigest(t *testing.T) {
	r := Reference{Host: "h", Name: "n", Tag: "t"}
	if r.TagOrDigest() != "t" {
		t.Error(r.TagOrDigest())
	}
	r.Digest = digest.Digest("sha256:" + hex64)
	if r.TagOrDigest() != "sha256:"+hex64 {
		t.Error(r.TagOrDigest())
	}
}

// TestChooseScheme is the decision of SPEC §8, for every host form.
func TestChooseScheme(t *testing.T) {
	for _, tc := range []struct {
		host  string
		plain bool
		want  schemePolicy
	}{
		{"localhost", false, httpsThenPlain},
		{"localhost:5000", false, httpsThenPlain},
		{"LocalHost:5000", false, httpsThenPlain},
		{"127.0.0.1", false, httpsThenPlain},
		{"127.0.0.1:5000", false, httpsThenPlain},
		{"[::1]", false, httpsThenPlain},
		{"[::1]:5000", false, httpsThenPlain},
		// Only the three names, as SPEC §8 says; other loopback
		// addresses and names that resolve to loopback need PlainHTTP.
		{"127.0.0.2:5000", false, httpsOnly},
		{"localhost.localdomain", false, httpsOnly},
		{"vm:5000", false, httpsOnly},
		{"registry.example.com", false, httpsOnly},
		{"10.0.0.1:5000", false, httpsOnly},
		{"[::2]:5000", false, httpsOnly},
		{"registry.example.com", true, plainOnly},
		{"localhost:5000", true, plainOnly},
	} {
		if got := chooseScheme(tc.host, tc.plain); got != tc.want {
			t.Errorf("chooseScheme(%q, %t) = %d, want %d", tc.host, tc.plain, got, tc.want)
		}
	}
}

// FuzzParseReference: no input panics, and an accepted reference prints
// back as it was written.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"oci://registry.example.com/canga/ubuntu:16.04",
		"oci://[::1]:5000/img@sha256:" + hex64,
		"oci://r.io/ubuntu@" + hex64,
		"oci://r.io/a:b/c",
		"oci://h:1/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReference(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidReference) {
				t.Fatalf("%q: error without ErrInvalidReference: %v", s, err)
			}
			return
		}
		if got := r.String(); got != s {
			t.Fatalf("%q prints as %q", s, got)
		}
		if (r.Tag != "") && (r.Digest != "") {
			t.Fatalf("%q: both tag and digest", s)
		}
	})
}
