//go:build !unix

package repo

// noFollow: Windows has no O_NOFOLLOW; symbolic links there need
// privileges to make.
const noFollow = 0
