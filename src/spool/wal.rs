//! The spool's log: accepted hooks are appended here and fsynced before they are answered;
//! the store ([`super::store`]) takes them afterwards without an fsync of its own, and makes
//! everything durable in a checkpoint every few MiB or at most a second apart.
//!
//! Why: a durable redb commit rewrites the pages it touched (the rightmost leaf of each table
//! and the branches above) and fsyncs them, about half a millisecond for a group of four hooks
//! here; one write to a file whose blocks already exist, and one `fdatasync`, is a third of
//! that. Where few connections share each commit, that is the hooks' rate.
//!
//! Two files, `spool.wal.0` and `spool.wal.1`, each [`FILE_BYTES`], written full of zeros once
//! when created so that no later write allocates a block (an fdatasync then carries no metadata).
//! One file is written at a time, from its start:
//!
//! - a header: [`MAGIC`], the spool's id, the first sequence number the file holds, a checksum;
//! - records: length, checksum (CRC-32 of the payload), payload: the hooks of one grouped commit.
//!
//! When a record does not fit, the other file is taken, once a checkpoint of the store covers
//! everything in it; if none does yet, the writer commits that group to the store durably
//! instead. Reading stops at the first record whose checksum fails, or whose sequence numbers
//! are not above those before it (what is left of a file's earlier use, all older than its
//! header): a write torn by a crash ends the log there, and it was never answered.
//!
//! On open the store knows the next sequence number its durable state holds; every hook in the
//! log at or past it is committed to the store before anything else happens.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::SpoolError;
use super::store::Row;

/// The first bytes of each file.
pub const MAGIC: [u8; 8] = *b"sgwal\0\0\x01";
/// Size of each file.
pub const FILE_BYTES: u64 = 8 << 20;
/// Bytes of a file's header: magic, spool id, first sequence number, checksum, padding.
const HEADER: usize = 32;
/// Bytes before each record's payload: its length and its checksum.
const RECORD_HEAD: usize = 8;

/// Where a group of hooks went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Into the file being written.
    Written,
    /// Into the other file, which is now the one being written: the store should make a
    /// checkpoint soon, so that the file left behind is free again when this one is full.
    Switched,
    /// Nowhere: no file has room (the other one is not covered by a checkpoint yet, or the
    /// group is larger than a file). Commit it to the store durably instead.
    NoRoom,
}

/// The log, owned by the writer thread.
#[derive(Debug)]
pub struct Wal {
    files: [File; 2],
    paths: [PathBuf; 2],
    spool_id: u64,
    capacity: u64,
    /// The file being written, and where the next record goes in it.
    active: usize,
    offset: u64,
    /// The highest sequence number written into each file since its header: a file is free
    /// once the store's durable state holds everything below its value plus one.
    last: [Option<u64>; 2],
    buf: Vec<u8>,
}

impl Wal {
    /// Opens (or creates) the two files in `dir` and reads back every hook they hold, in
    /// sequence order. Nothing is written until [`Wal::begin`].
    pub fn open(dir: &Path, spool_id: u64) -> Result<(Wal, Vec<Row>), SpoolError> {
        Self::open_with(dir, spool_id, FILE_BYTES)
    }

    fn open_with(dir: &Path, spool_id: u64, capacity: u64) -> Result<(Wal, Vec<Row>), SpoolError> {
        let paths = [dir.join("spool.wal.0"), dir.join("spool.wal.1")];
        let mut rows = Vec::new();
        let mut opened = Vec::with_capacity(2);
        for path in &paths {
            let file = open_file(path, capacity)?;
            rows.extend(read_log(&file, capacity, spool_id));
            opened.push(file);
        }
        rows.sort_by_key(|r| r.seq);
        rows.dedup_by_key(|r| r.seq);
        let mut files = opened.into_iter();
        let (Some(a), Some(b)) = (files.next(), files.next()) else {
            return Err(open_err(&paths[0], "cannot open", &"missing file"));
        };
        let wal = Wal {
            files: [a, b],
            paths,
            spool_id,
            capacity,
            active: 0,
            offset: 0,
            last: [None, None],
            buf: Vec::new(),
        };
        Ok((wal, rows))
    }

    /// Starts writing, once the store's durable state holds everything read back: the first
    /// file gets a header for `next_seq`, and both files count as free.
    pub fn begin(&mut self, next_seq: u64) -> Result<(), SpoolError> {
        let header = header(self.spool_id, next_seq);
        let file = &self.files[0];
        file.write_all_at(&header, 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| open_err(&self.paths[0], "cannot write", &e))?;
        self.active = 0;
        self.offset = HEADER as u64;
        self.last = [None, None];
        Ok(())
    }

    /// Appends `rows` (one group, in sequence order) and makes them durable. `durable_next`:
    /// the store's durable state holds every sequence number below it. On an error nothing
    /// counts as written, and the next append goes to the same place.
    pub fn append(&mut self, rows: &[Row], durable_next: u64) -> Result<Appended, SpoolError> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(Appended::Written);
        };
        let (first, last) = (first.seq, last.seq);
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; RECORD_HEAD]);
        for row in rows {
            encode_row(&mut self.buf, row);
        }
        let len = u32::try_from(self.buf.len() - RECORD_HEAD).unwrap_or(u32::MAX);
        let crc = crc32(&self.buf[RECORD_HEAD..]);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let need = self.buf.len() as u64;
        if self.offset + need <= self.capacity {
            let file = &self.files[self.active];
            file.write_all_at(&self.buf, self.offset)
                .and_then(|()| file.sync_data())
                .map_err(|e| write_err(&self.paths[self.active], &e))?;
            self.offset += need;
            self.last[self.active] = Some(last);
            return Ok(Appended::Written);
        }
        let other = 1 - self.active;
        let free = self.last[other].is_none_or(|l| l < durable_next);
        if !free || HEADER as u64 + need > self.capacity {
            return Ok(Appended::NoRoom);
        }
        // The header and the first record in one write: a file is never left with a header
        // for records that are not there, only with a record torn off its end.
        let mut out = Vec::with_capacity(HEADER + self.buf.len());
        out.extend_from_slice(&header(self.spool_id, first));
        out.extend_from_slice(&self.buf);
        let file = &self.files[other];
        file.write_all_at(&out, 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| write_err(&self.paths[other], &e))?;
        self.active = other;
        self.offset = out.len() as u64;
        self.last[other] = Some(last);
        Ok(Appended::Switched)
    }
}

fn header(spool_id: u64, start: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&spool_id.to_le_bytes());
    h[16..24].copy_from_slice(&start.to_le_bytes());
    let crc = crc32(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Where a log is read from: a file, or bytes in a test.
trait Source {
    /// Fills `buf` from `at`; `false` when that is past the end or the read fails.
    fn fill(&self, at: u64, buf: &mut [u8]) -> bool;
}

impl Source for File {
    fn fill(&self, at: u64, buf: &mut [u8]) -> bool {
        self.read_exact_at(buf, at).is_ok()
    }
}

impl Source for [u8] {
    fn fill(&self, at: u64, buf: &mut [u8]) -> bool {
        let Ok(at) = usize::try_from(at) else {
            return false;
        };
        match at.checked_add(buf.len()).and_then(|end| self.get(at..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// Every hook a log file of `capacity` bytes holds, read a record at a time (a start-up reads
/// no more than the records it finds): none when its header is not this spool's.
fn read_log<S: Source + ?Sized>(src: &S, capacity: u64, spool_id: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut h = [0u8; HEADER];
    if !src.fill(0, &mut h) {
        return rows;
    }
    if h[..8] != MAGIC || u64_at(&h, 8) != Some(spool_id) || u32_at(&h, 24) != Some(crc32(&h[..24]))
    {
        return rows;
    }
    let Some(mut floor) = u64_at(&h, 16) else {
        return rows;
    };
    let mut at = HEADER as u64;
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; RECORD_HEAD];
        if !src.fill(at, &mut head) {
            break;
        }
        let (Some(len), Some(crc)) = (u32_at(&head, 0), u32_at(&head, 4)) else {
            break;
        };
        let start = at + RECORD_HEAD as u64;
        let end = start + u64::from(len);
        if len == 0 || end > capacity {
            break;
        }
        payload.resize(len as usize, 0);
        if !src.fill(start, &mut payload) || crc32(&payload) != crc {
            break;
        }
        let Some(group) = decode_group(&payload) else {
            break;
        };
        let in_order = group.first().is_some_and(|r| r.seq >= floor)
            && group.windows(2).all(|w| w[0].seq < w[1].seq);
        if !in_order {
            break;
        }
        if let Some(last) = group.last() {
            floor = last.seq.saturating_add(1);
        }
        rows.extend(group);
        at = end;
    }
    rows
}

fn encode_row(buf: &mut Vec<u8>, row: &Row) {
    buf.extend_from_slice(&row.seq.to_le_bytes());
    buf.extend_from_slice(&row.received_ms.to_le_bytes());
    match row.dedup {
        Some(key) => {
            buf.push(1);
            buf.extend_from_slice(&key.to_le_bytes());
        }
        None => buf.push(0),
    }
    for field in [row.path.as_bytes(), row.client.as_bytes(), &row.event[..]] {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(field);
    }
}

/// The rows of one record's payload; `None` when it does not parse whole.
fn decode_group(mut p: &[u8]) -> Option<Vec<Row>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = p.split_at_checked(n)?;
        *p = rest;
        Some(head)
    }
    fn field<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(take(p, 4)?.try_into().ok()?);
        take(p, usize::try_from(len).ok()?)
    }
    let mut rows = Vec::new();
    while !p.is_empty() {
        let seq = u64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?);
        let received_ms = u64::from_le_bytes(take(&mut p, 8)?.try_into().ok()?);
        let dedup = match take(&mut p, 1)?[0] {
            0 => None,
            1 => Some(u128::from_le_bytes(take(&mut p, 16)?.try_into().ok()?)),
            _ => return None,
        };
        let path = String::from_utf8(field(&mut p)?.to_vec()).ok()?;
        let client = String::from_utf8(field(&mut p)?.to_vec()).ok()?;
        let event = Bytes::copy_from_slice(field(&mut p)?);
        rows.push(Row {
            seq,
            received_ms,
            path,
            client,
            event,
            dedup,
        });
    }
    Some(rows)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// CRC-32 (IEEE 802.3, as zlib computes it), with the CPU's carry-less multiply where it has
/// one: every hook's bytes pass through it on the writer thread (a table a byte at a time took
/// half of that thread's CPU at 25,000 hooks/s).
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn open_err(path: &Path, what: &str, e: &dyn std::fmt::Display) -> SpoolError {
    SpoolError::Open {
        path: path.to_path_buf(),
        why: format!("{what}: {e}"),
    }
}

fn write_err(path: &Path, e: &std::io::Error) -> SpoolError {
    SpoolError::Store(format!("{}: {e}", path.display()))
}

/// Opens a log file (owner-only: it holds hook bodies), writing it full of zeros up to
/// `capacity` when it is shorter (new, or cut short by a crash while it was being made).
fn open_file(path: &Path, capacity: u64) -> Result<File, SpoolError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| open_err(path, "cannot open", &e))?;
    let len = file
        .metadata()
        .map_err(|e| open_err(path, "cannot open", &e))?
        .len();
    if len < capacity {
        let zeros = [0u8; 64 << 10];
        let mut at = len;
        while at < capacity {
            let n = usize::try_from((capacity - at).min(zeros.len() as u64)).unwrap_or(0);
            file.write_all_at(&zeros[..n], at)
                .map_err(|e| open_err(path, "cannot write", &e))?;
            at += n as u64;
        }
        file.sync_all()
            .map_err(|e| open_err(path, "cannot write", &e))?;
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| open_err(path, "cannot write", &e))?;
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, dedup: Option<u128>) -> Row {
        Row {
            seq,
            received_ms: 1_000 + seq,
            path: "github/deploy".into(),
            client: "10.0.0.1".into(),
            event: Bytes::from(format!("salt/netapi/hook/github/deploy\n\n{seq:0>200}")),
            dedup,
        }
    }

    fn seqs(rows: &[Row]) -> Vec<u64> {
        rows.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn what_was_appended_is_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, rows) = Wal::open(dir.path(), 7).unwrap();
        assert!(rows.is_empty());
        wal.begin(5).unwrap();
        let written = vec![row(5, Some(u128::MAX)), row(6, None)];
        assert_eq!(wal.append(&written, 5).unwrap(), Appended::Written);
        assert_eq!(
            wal.append(&[row(7, Some(3))], 5).unwrap(),
            Appended::Written
        );
        drop(wal);
        let (_, rows) = Wal::open(dir.path(), 7).unwrap();
        assert_eq!(seqs(&rows), [5, 6, 7]);
        assert_eq!(rows[0].dedup, Some(u128::MAX));
        assert_eq!(rows[1].dedup, None);
        assert_eq!(rows[1].event, written[1].event);
        assert_eq!(rows[1].path, "github/deploy");
        assert_eq!(rows[1].client, "10.0.0.1");
        assert_eq!(rows[1].received_ms, 1_006);
        // Another spool's log is not this one's.
        let (_, rows) = Wal::open(dir.path(), 8).unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn a_torn_record_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 7).unwrap();
        wal.begin(0).unwrap();
        wal.append(&[row(0, None)], 0).unwrap();
        let end_of_first = wal.offset;
        wal.append(&[row(1, None), row(2, None)], 0).unwrap();
        wal.append(&[row(3, None)], 0).unwrap();
        drop(wal);
        // A byte of the second record's payload never reached the disk.
        let path = dir.path().join("spool.wal.0");
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xAA], end_of_first + RECORD_HEAD as u64 + 40)
            .unwrap();
        let (_, rows) = Wal::open(dir.path(), 7).unwrap();
        assert_eq!(seqs(&rows), [0], "nothing after the torn record counts");
    }

    #[test]
    fn files_are_reused_only_once_a_checkpoint_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        // Room for a header and three records of one row in each file.
        let one = {
            let mut b = Vec::new();
            encode_row(&mut b, &row(0, None));
            (b.len() + RECORD_HEAD) as u64
        };
        let capacity = HEADER as u64 + 3 * one;
        let (mut wal, _) = Wal::open_with(dir.path(), 7, capacity).unwrap();
        wal.begin(0).unwrap();
        for seq in 0..3 {
            assert_eq!(wal.append(&[row(seq, None)], 0).unwrap(), Appended::Written);
        }
        // File 1 holds nothing yet: free.
        assert_eq!(wal.append(&[row(3, None)], 0).unwrap(), Appended::Switched);
        for seq in 4..6 {
            assert_eq!(wal.append(&[row(seq, None)], 0).unwrap(), Appended::Written);
        }
        // File 0 holds 0..=2, and the store's durable state only 0 and 1.
        assert_eq!(wal.append(&[row(6, None)], 2).unwrap(), Appended::NoRoom);
        // A group larger than a file never fits.
        let big: Vec<Row> = (6..10).map(|s| row(s, None)).collect();
        assert_eq!(wal.append(&big, 3).unwrap(), Appended::NoRoom);
        // Once 0..=2 are durable in the store, file 0 is taken again, from its start.
        assert_eq!(wal.append(&[row(6, None)], 3).unwrap(), Appended::Switched);
        drop(wal);
        let (_, rows) = Wal::open_with(dir.path(), 7, capacity).unwrap();
        // File 0's older records (1 and 2, still there after the new one) are not read.
        assert_eq!(seqs(&rows), [3, 4, 5, 6]);
    }

    #[test]
    fn garbage_never_parses_as_hooks() {
        let mut state = 0x1234_5678_u64;
        for _ in 0..2_000 {
            let mut content = header(7, 0).to_vec();
            let len = (state % 600) as usize;
            for _ in 0..len {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                content.push((state >> 33) as u8);
            }
            // Bounded whatever the bytes; a random record never passes its checksum.
            assert!(read_log(&content[..], 4096, 7).is_empty());
        }
        let mut buf = Vec::new();
        encode_row(&mut buf, &row(1, Some(9)));
        for cut in 0..buf.len() {
            assert!(decode_group(&buf[..cut]).is_none_or(|g| g.is_empty()));
        }
    }
}
