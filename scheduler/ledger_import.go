package scheduler

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/amberfn/amber/api"
	"github.com/amberfn/amber/scheduler/internal/engine"
)

// The one-time import of the bbolt ledger (before JetStream):
//
//	DATA/ledger.db   records/<uint64 BE unix ns><uint64 BE seq>   JSON api.LedgerRecord
//	                 hourly/<uint64 BE unix s of the hour><name>  JSON api.Usage
//	                 meta/wal_applied                             uint64 BE: how much of ledger.wal is in the buckets
//	DATA/ledger.wal  frames: uint32 BE length | uint32 BE CRC-32C | JSON api.LedgerRecord
//
// The hourly sums are added into AMBER_USAGE (each entry marked Imported,
// so a second pass adds nothing); the raw records are published to the
// ledger stream marked Amber-Imported, so the listing has them and the
// usage consumer does not sum them again; the records of the log the old
// scheduler had not applied yet (a crash) are published as ordinary
// records, so they are summed. Progress is kept in
// import.ledger.progress, so an import cut short resumes where it
// stopped; then import.ledger marks it done for the whole cluster and the
// files are renamed ledger.db.imported and ledger.wal.imported.
const (
	importMarkerKey   = "import.ledger"
	importProgressKey = "import.ledger.progress"
	importBatch       = 1000
)

type ledgerImportProgress struct {
	LastKey string `json:"last_key,omitempty"` // hex of the last records key published
	Records int    `json:"records"`
	WALDone bool   `json:"wal_done,omitempty"`
}

type ledgerImportMarker struct {
	At         time.Time `json:"at"`
	Path       string    `json:"path"`
	Records    int       `json:"records"`
	Hourly     int       `json:"hourly"`
	WALRecords int       `json:"wal_records"`
}

// importBolt imports DATA/ledger.db (and ledger.wal) once.
func (l *ledger) importBolt(ctx context.Context, dir string) error {
	path := filepath.Join(dir, "ledger.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	abs, _ := filepath.Abs(path)
	if ent, err := l.kv.Get(ctx, importMarkerKey); err == nil {
		var mk ledgerImportMarker
		json.Unmarshal(ent.Value(), &mk)
		if mk.Path == abs {
			// Imported, stopped before the rename.
			return renameImported(dir)
		}
		l.log.Warn("ledger: not importing "+path+": the cluster imported a bbolt ledger already",
			"imported_from", mk.Path, "at", mk.At)
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("ledger import: %w", engine.Wrap(err))
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("ledger import: open %s: %w", path, err)
	}
	defer db.Close()

	var prog ledgerImportProgress
	if ent, err := l.kv.Get(ctx, importProgressKey); err == nil {
		if err := json.Unmarshal(ent.Value(), &prog); err != nil {
			return fmt.Errorf("ledger import: %s: %w", importProgressKey, err)
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("ledger import: %w", engine.Wrap(err))
	}
	saveProgress := func() error {
		data, _ := json.Marshal(prog)
		if _, err := l.kv.Put(ctx, importProgressKey, data); err != nil {
			return fmt.Errorf("ledger import: %w", engine.Wrap(err))
		}
		return nil
	}

	// Hourly sums (each entry takes them once).
	type hourly struct {
		key string
		u   api.Usage
	}
	var sums []hourly
	var walApplied int64
	err = db.View(func(tx *bolt.Tx) error {
		if m := tx.Bucket([]byte("meta")); m != nil {
			if v := m.Get([]byte("wal_applied")); len(v) == 8 {
				walApplied = int64(binary.BigEndian.Uint64(v))
			}
		}
		b := tx.Bucket([]byte("hourly"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) <= 8 {
				return fmt.Errorf("hourly key %x: too short", k)
			}
			name := string(k[8:])
			if err := ledgerToken(name); err != nil {
				return fmt.Errorf("hourly key %x: %w", k, err)
			}
			var u api.Usage
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("hourly sums of %q: %w", name, err)
			}
			hour := time.Unix(int64(binary.BigEndian.Uint64(k[:8])), 0).UTC()
			u.Period, u.Function = time.Time{}, ""
			sums = append(sums, hourly{usageKey(hour, name), u})
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("ledger import: %s: %w", path, err)
	}
	for _, h := range sums {
		if err := l.addUsage(ctx, h.key, []seqUsage{{u: h.u}}, 0, true); err != nil {
			return fmt.Errorf("ledger import: %w", err)
		}
	}

	// Raw records, marked imported, resuming after the last batch stored.
	var after []byte
	if prog.LastKey != "" {
		if after, err = hex.DecodeString(prog.LastKey); err != nil {
			return fmt.Errorf("ledger import: %s: %w", importProgressKey, err)
		}
	}
	for {
		var recs []api.LedgerRecord
		var first, last []byte
		err := db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("records"))
			if b == nil {
				return nil
			}
			c := b.Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && len(recs) < importBatch; k, v = c.Next() {
				var rec api.LedgerRecord
				if err := json.Unmarshal(v, &rec); err != nil {
					return fmt.Errorf("record %x: %w", k, err)
				}
				if err := ledgerToken(rec.Function); err != nil {
					return fmt.Errorf("record %x: %w", k, err)
				}
				recs = append(recs, rec)
				if first == nil {
					first = bytes.Clone(k)
				}
				last = append(last[:0], k...)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("ledger import: %s: %w", path, err)
		}
		if len(recs) == 0 {
			break
		}
		// One message per function, with an id the same batch gets again
		// if this import is cut short and resumed.
		msgs, err := importMsgs(recs, "import-"+hex.EncodeToString(first))
		if err != nil {
			return fmt.Errorf("ledger import: %w", err)
		}
		for _, m := range msgs {
			m.Header.Set(hdrLedgerImported, "1")
		}
		for _, err := range l.send(msgs) {
			if err != nil {
				return fmt.Errorf("ledger import: %w", err)
			}
		}
		after = bytes.Clone(last)
		prog.LastKey, prog.Records = hex.EncodeToString(after), prog.Records+len(recs)
		if err := saveProgress(); err != nil {
			return err
		}
	}

	// The log's records the old scheduler had not applied: summed as new.
	walRecords := 0
	if !prog.WALDone {
		recs, err := readOldWAL(filepath.Join(dir, "ledger.wal"), walApplied)
		if err != nil {
			return fmt.Errorf("ledger import: %w", err)
		}
		msgs, err := importMsgs(recs, fmt.Sprintf("import-wal-%d", walApplied))
		if err != nil {
			return fmt.Errorf("ledger import: ledger.wal: %w", err)
		}
		for _, err := range l.send(msgs) {
			if err != nil {
				return fmt.Errorf("ledger import: %w", err)
			}
		}
		walRecords = len(recs)
		prog.WALDone = true
		if err := saveProgress(); err != nil {
			return err
		}
	}

	mk, _ := json.Marshal(ledgerImportMarker{At: time.Now().UTC(), Path: abs, Records: prog.Records, Hourly: len(sums), WALRecords: walRecords})
	if _, err := l.kv.Create(ctx, importMarkerKey, mk); err != nil {
		return fmt.Errorf("ledger import: mark done: %w", engine.Wrap(err))
	}
	db.Close()
	if err := renameImported(dir); err != nil {
		return err
	}
	l.log.Info("imported from bbolt", "part", "ledger", "from", path, "records", prog.Records, "hourly_sums", len(sums),
		"unapplied_log_records", walRecords, "renamed_to", "ledger.db.imported (and ledger.wal.imported)")
	return nil
}

// importMsgs makes one message per function of recs, each with the id
// prefix and the function.
func importMsgs(recs []api.LedgerRecord, id string) ([]*nats.Msg, error) {
	byFn := map[string][]api.LedgerRecord{}
	var order []string
	for _, r := range recs {
		if byFn[r.Function] == nil {
			order = append(order, r.Function)
		}
		byFn[r.Function] = append(byFn[r.Function], r)
	}
	var msgs []*nats.Msg
	for _, fn := range order {
		m, err := recordsMsg(fn, byFn[fn])
		if err != nil {
			return nil, err
		}
		m.Header.Set(jetstream.MsgIDHeader, id+"-"+fn)
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// renameImported renames the imported files, so no later start reads them.
func renameImported(dir string) error {
	for _, f := range []string{"ledger.db", "ledger.wal"} {
		p := filepath.Join(dir, f)
		if err := os.Rename(p, p+".imported"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("ledger import: %w", err)
		}
	}
	return nil
}

var oldWALTable = crc32.MakeTable(crc32.Castagnoli)

// readOldWAL reads the whole frames of the old ledger log from off, with
// a torn or damaged frame ends it (it was never
// acknowledged).
func readOldWAL(path string, off int64) ([]api.LedgerRecord, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if off > int64(len(data)) {
		return nil, nil // emptied after everything was applied
	}
	var recs []api.LedgerRecord
	for pos := int(off); ; {
		rec, n, ok := decodeOldWALFrame(data[pos:])
		if !ok {
			break
		}
		recs = append(recs, rec)
		pos += n
	}
	return recs, nil
}

func decodeOldWALFrame(b []byte) (api.LedgerRecord, int, bool) {
	var rec api.LedgerRecord
	if len(b) < 8 {
		return rec, 0, false
	}
	n := binary.BigEndian.Uint32(b)
	if n == 0 || n > 1<<20 || int(n) > len(b)-8 {
		return rec, 0, false
	}
	payload := b[8 : 8+int(n)]
	if crc32.Checksum(payload, oldWALTable) != binary.BigEndian.Uint32(b[4:]) {
		return rec, 0, false
	}
	if json.Unmarshal(payload, &rec) != nil {
		return rec, 0, false
	}
	return rec, 8 + int(n), true
}
