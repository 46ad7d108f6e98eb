package remote

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// Get downloads the file rel of the repository at baseURL whole: a small
// file that changes, such as index.yaml or its signature. It holds at most
// limit bytes (more is [ErrTooLarge], without reading them all), and it is
// asked for with "Cache-Control: no-cache", so that a proxy or CDN asks
// the origin and a new index is seen. A missing file (404 or 410) is an
// error matching [ErrNotFound]. Transient failures are retried as for
// [Client.Open].
func (c *Client) Get(ctx context.Context, baseURL, rel string, limit int64) ([]byte, error) {
	u, err := resolve(baseURL, rel)
	if err != nil {
		return nil, unwrapPermanent(err)
	}
	var out []byte
	err = c.retry(ctx, func() (bool, error) {
		resp, err := c.get(ctx, u, 0, http.Header{"Cache-Control": {"no-cache"}})
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, statusError(u, resp)
		}
		tooLarge := &permanent{fmt.Errorf("%w: %s holds more than %d bytes", ErrTooLarge, Redact(u), limit)}
		if resp.ContentLength > limit {
			return false, tooLarge
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			return false, fmt.Errorf("remote: GET %s: %w", Redact(u), err)
		}
		if int64(len(b)) > limit {
			return false, tooLarge
		}
		out = b
		return false, nil
	})
	return out, err
}
