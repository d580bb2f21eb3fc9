package authz

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// readRegularFile reads a file the kit watches (a certificate, a key, a CA bundle), which must be a
// regular file of at most max bytes: a FIFO at the path would block the read for ever, a device would
// never end. It is opened non-blocking, then judged by what it is. The path is opened anew each time,
// so a symlink swapped under it (a kubelet ..data update) is followed. The error says why, never what
// the file holds.
func readRegularFile(path string, max int64) ([]byte, error) {
	file, err := os.OpenFile(path, os.O_RDONLY|openNonBlocking, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: cannot read: %w", path, pe.Err)
		}
		return nil, fmt.Errorf("%s: cannot read", path)
	}
	defer file.Close()
	st, err := file.Stat()
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: cannot read: %w", path, err)
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s: cannot read: not a regular file", path)
	case st.Size() > max:
		return nil, fmt.Errorf("%s: cannot read: larger than %d bytes", path, max)
	}
	data, err := io.ReadAll(io.LimitReader(file, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: cannot read: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: cannot read: larger than %d bytes", path, max)
	}
	return data, nil
}
