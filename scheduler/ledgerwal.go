package scheduler

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"syscall"

	"github.com/amberfn/amber/api"
)

// ledgerWAL is the ledger's write-ahead log, DATA/ledger.wal. A finished
// invocation's record is appended here — and the append made durable with
// one fdatasync shared by every record in the group — before the caller
// sees the answer; the ledger loop applies the log to ledger.db in batches
// a few times a second and empties it once it is all applied.
//
// An append is one pwrite of whole frames at the end of the valid log:
//
//	uint32 BE length | uint32 BE CRC-32C of the payload | payload (JSON api.LedgerRecord)
//
// A crash in the middle of a write leaves a torn last frame; reading stops
// at the first frame whose length or checksum does not hold, and the next
// append overwrites it.
type ledgerWAL struct {
	f    *os.File
	path string
	size int64 // end of the last whole frame
	buf  []byte
}

const walFrameHeader = 8

// walMaxRecord bounds one frame; a record is a few hundred bytes.
const walMaxRecord = 1 << 20

var walTable = crc32.MakeTable(crc32.Castagnoli)

// errWALCorrupt marks a frame that does not hold together.
var errWALCorrupt = errors.New("ledger log: torn or corrupt frame")

func openWAL(path string) (*ledgerWAL, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ledger log: %w", err)
	}
	return &ledgerWAL{f: f, path: path}, nil
}

// readFrom reads the whole frames from off to the end of the file, and
// sets the log's end after the last of them. dropped is how many bytes
// after it did not form a whole frame.
func (w *ledgerWAL) readFrom(off int64) (recs []api.LedgerRecord, dropped int64, err error) {
	st, err := w.f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("ledger log: %w", err)
	}
	if off > st.Size() {
		// Emptied after its records were applied, before the applied offset was reset.
		off = st.Size()
	}
	data := make([]byte, st.Size()-off)
	if _, err := w.f.ReadAt(data, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("ledger log: %w", err)
	}
	pos := 0
	for pos < len(data) {
		rec, n, err := decodeWALFrame(data[pos:])
		if err != nil {
			break
		}
		recs = append(recs, rec)
		pos += n
	}
	w.size = off + int64(pos)
	if pos < len(data) {
		// Cut the torn frame off, so nothing stale is left past what the next append writes.
		if err := w.f.Truncate(w.size); err != nil {
			return nil, 0, fmt.Errorf("ledger log: truncate a torn frame: %w", err)
		}
	}
	return recs, int64(len(data) - pos), nil
}

// decodeWALFrame decodes the frame at the start of b and its length.
func decodeWALFrame(b []byte) (api.LedgerRecord, int, error) {
	var rec api.LedgerRecord
	if len(b) < walFrameHeader {
		return rec, 0, errWALCorrupt
	}
	n := binary.BigEndian.Uint32(b)
	if n == 0 || n > walMaxRecord || int(n) > len(b)-walFrameHeader {
		return rec, 0, errWALCorrupt
	}
	payload := b[walFrameHeader : walFrameHeader+int(n)]
	if crc32.Checksum(payload, walTable) != binary.BigEndian.Uint32(b[4:]) {
		return rec, 0, errWALCorrupt
	}
	if err := json.Unmarshal(payload, &rec); err != nil {
		return rec, 0, fmt.Errorf("%w: %v", errWALCorrupt, err)
	}
	return rec, walFrameHeader + int(n), nil
}

// append writes recs at the end of the log and, with sync, waits for them
// to reach the disk. On error the log's end does not move: the next append
// overwrites whatever part of these frames was written.
func (w *ledgerWAL) append(recs []api.LedgerRecord, sync bool) error {
	w.buf = w.buf[:0]
	for i := range recs {
		data, err := json.Marshal(&recs[i])
		if err != nil {
			return fmt.Errorf("ledger log: encode: %w", err)
		}
		w.buf = binary.BigEndian.AppendUint32(w.buf, uint32(len(data)))
		w.buf = binary.BigEndian.AppendUint32(w.buf, crc32.Checksum(data, walTable))
		w.buf = append(w.buf, data...)
	}
	if _, err := w.f.WriteAt(w.buf, w.size); err != nil {
		return fmt.Errorf("ledger log: write: %w", err)
	}
	if sync {
		if err := fdatasync(w.f); err != nil {
			return fmt.Errorf("ledger log: sync: %w", err)
		}
	}
	w.size += int64(len(w.buf))
	return nil
}

// reset empties the log (every record in it has been applied).
func (w *ledgerWAL) reset() error {
	if err := w.f.Truncate(0); err != nil {
		return fmt.Errorf("ledger log: truncate: %w", err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("ledger log: sync: %w", err)
	}
	w.size = 0
	return nil
}

func (w *ledgerWAL) close() error { return w.f.Close() }

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
