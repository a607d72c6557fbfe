//! CRI container log format: `<RFC3339Nano> <stream> <P|F> <text>\n`.
//!
//! This is the format kubelet's `kubectl logs` reader and log rotation expect (the one containerd
//! and CRI-O write). Output of a stream is split at newlines; each line becomes one record tagged
//! `F` (full). A line longer than [`MAX_LINE`] bytes is written as `P` (partial) records of
//! exactly `MAX_LINE` bytes followed by an `F` record with the rest, as containerd does with its
//! default `max_container_log_line_size`. Text left without a newline when the stream ends is
//! written as an `F` record. Every record is written with a single `writev(2)` on an `O_APPEND`
//! file, so a reader never sees half a record and nothing is held in a user-space buffer.
//!
//! The splitter runs in the shim's steady-state loop, whose resident memory is mostly the code
//! and data it touches: a complete line is written straight from the caller's read buffer (only
//! an unterminated tail is copied aside), the record is assembled by `writev` rather than in a
//! heap buffer, and [`Timestamp`] formats the time without `std::fmt` or chrono.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::Path;

/// Longest text of one record; longer lines are split into `P` records.
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream of the container a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's standard output.
    Stdout,
    /// The container's standard error.
    Stderr,
}

impl Stream {
    /// The record's middle part: ` <stream> <tag> `.
    fn header(self, tag: Tag) -> &'static [u8] {
        match (self, tag) {
            (Stream::Stdout, Tag::Full) => b" stdout F ",
            (Stream::Stdout, Tag::Partial) => b" stdout P ",
            (Stream::Stderr, Tag::Full) => b" stderr F ",
            (Stream::Stderr, Tag::Partial) => b" stderr P ",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Tag {
    Full,
    Partial,
}

/// A UTC time as RFC 3339 with nanoseconds and `Z` (`2026-04-20T10:11:12.123456789Z`), the form
/// of CRI log records (Go's `time.RFC3339Nano` parses it), formatted into a fixed buffer.
///
/// Years are written with four digits: times before 1970 are written as the epoch and after
/// 9999 as the last nanosecond of 9999 (neither occurs on a running host).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Timestamp([u8; Timestamp::LEN]);

impl Timestamp {
    const LEN: usize = 30;
    /// Seconds from the epoch to 10000-01-01T00:00:00Z.
    const MAX_SECS: u64 = 253_402_300_800;

    /// The current time (`CLOCK_REALTIME`).
    pub fn now() -> Self {
        use nix::time::{clock_gettime, ClockId};
        match clock_gettime(ClockId::CLOCK_REALTIME) {
            Ok(t) => Self::from_unix(
                u64::try_from(t.tv_sec()).unwrap_or(0),
                u32::try_from(t.tv_nsec()).unwrap_or(0),
            ),
            Err(_) => Self::from_unix(0, 0),
        }
    }

    /// The time `secs` seconds and `nanos` nanoseconds after the Unix epoch.
    pub fn from_unix(secs: u64, nanos: u32) -> Self {
        let (secs, nanos) = if secs >= Self::MAX_SECS {
            (Self::MAX_SECS - 1, 999_999_999)
        } else {
            (secs, nanos.min(999_999_999))
        };
        let days = secs / 86_400;
        let sod = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let mut b = *b"0000-00-00T00:00:00.000000000Z";
        put_digits(&mut b[0..4], y);
        put_digits(&mut b[5..7], m);
        put_digits(&mut b[8..10], d);
        put_digits(&mut b[11..13], sod / 3600);
        put_digits(&mut b[14..16], sod / 60 % 60);
        put_digits(&mut b[17..19], sod % 60);
        put_digits(&mut b[20..29], u64::from(nanos));
        Timestamp(b)
    }

    /// The formatted time.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl AsRef<[u8]> for Timestamp {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes `v` as decimal digits filling `out` (zero-padded; higher digits are dropped).
fn put_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Proleptic Gregorian (year, month, day) of the day `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Opens (creating if needed) a container log file for appending.
pub fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Splits one stream's bytes into CRI records, keeping an incomplete line between reads.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    /// The start of a line whose newline has not been read yet: never holds a newline, and never
    /// more than `MAX_LINE` bytes (a longer line has had its first part written as `P`).
    pending: Vec<u8>,
}

impl LineSplitter {
    /// A splitter for `stream` with nothing pending.
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// The stream this splitter writes records of.
    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// Feeds bytes read from the stream; writes every complete record to `out`.
    ///
    /// `now` gives the timestamp of each record (called once per record). When a write fails,
    /// the error is returned and the rest of `data` is dropped (nothing piles up in memory
    /// while the disk is full).
    pub fn feed<W: Write, T: AsRef<[u8]>>(
        &mut self,
        mut data: &[u8],
        out: &mut W,
        now: &mut impl FnMut() -> T,
    ) -> io::Result<()> {
        if !self.pending.is_empty() {
            // Complete the pending line first: its record is the pending bytes followed by the
            // start of `data` (the same records as if both had been read at once).
            let room = MAX_LINE - self.pending.len();
            let nl = data.iter().take(room + 1).position(|&b| b == b'\n');
            let (tag, take, skip) = match nl {
                Some(nl) => (Tag::Full, nl, nl + 1),
                None if data.len() > room => (Tag::Partial, room, room),
                None => {
                    self.pending.extend_from_slice(data);
                    return Ok(());
                }
            };
            let res = write_record(out, now, self.stream, tag, &self.pending, &data[..take]);
            self.pending.clear();
            self.release_pending();
            res?;
            data = &data[skip..];
        }
        loop {
            match data.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
                Some(nl) => {
                    write_record(out, now, self.stream, Tag::Full, &data[..nl], &[])?;
                    data = &data[nl + 1..];
                }
                // No newline within a record's reach: the line is longer than MAX_LINE, so its
                // first MAX_LINE bytes are a partial record.
                None if data.len() > MAX_LINE => {
                    write_record(out, now, self.stream, Tag::Partial, &data[..MAX_LINE], &[])?;
                    data = &data[MAX_LINE..];
                }
                None => break,
            }
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    /// The stream has ended: writes pending text (a last line without newline) as `F`.
    pub fn finish<W: Write, T: AsRef<[u8]>>(
        &mut self,
        out: &mut W,
        now: &mut impl FnMut() -> T,
    ) -> io::Result<()> {
        if !self.pending.is_empty() {
            let res = write_record(out, now, self.stream, Tag::Full, &self.pending, &[]);
            self.pending = Vec::new();
            res?;
        }
        Ok(())
    }

    /// A long line's buffer is not kept once it is written.
    fn release_pending(&mut self) {
        if self.pending.capacity() > 4096 {
            self.pending = Vec::new();
        }
    }
}

/// Writes one record, `<now> <stream> <tag> <text><more>\n`, with one `writev` (more only if the
/// file takes part of it, which a regular file does only when it is full).
fn write_record<W: Write, T: AsRef<[u8]>>(
    out: &mut W,
    now: &mut impl FnMut() -> T,
    stream: Stream,
    tag: Tag,
    text: &[u8],
    more: &[u8],
) -> io::Result<()> {
    let ts = now();
    let mut parts = [
        IoSlice::new(ts.as_ref()),
        IoSlice::new(stream.header(tag)),
        IoSlice::new(text),
        IoSlice::new(more),
        IoSlice::new(b"\n"),
    ];
    let mut bufs = &mut parts[..];
    while !bufs.is_empty() {
        match out.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stream: Stream, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::new(stream);
        let mut out = Vec::new();
        let mut now = || "T";
        for c in chunks {
            s.feed(c, &mut out, &mut now).unwrap();
        }
        s.finish(&mut out, &mut now).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn lines_are_split_across_reads() {
        let got = run(Stream::Stdout, &[b"hel", b"lo\nwor", b"ld\n\n", b"tail"]);
        assert_eq!(
            got,
            [
                "T stdout F hello",
                "T stdout F world",
                "T stdout F ",
                "T stdout F tail"
            ]
        );
    }

    #[test]
    fn long_line_is_partial_chunks_then_full() {
        let line = vec![b'x'; 2 * MAX_LINE + 10];
        let mut data = line.clone();
        data.extend_from_slice(b"\nshort\n");
        let got = run(Stream::Stderr, &[&data[..100], &data[100..]]);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], format!("T stderr P {}", "x".repeat(MAX_LINE)));
        assert_eq!(got[1], format!("T stderr P {}", "x".repeat(MAX_LINE)));
        assert_eq!(got[2], format!("T stderr F {}", "x".repeat(10)));
        assert_eq!(got[3], "T stderr F short");
    }

    /// The records of a whole stream, computed in one piece (the definition of the format).
    fn reference(stream: Stream, data: &[u8]) -> Vec<String> {
        let name = if stream == Stream::Stdout {
            "stdout"
        } else {
            "stderr"
        };
        let mut got = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) if nl <= MAX_LINE => {
                    got.push(format!(
                        "T {name} F {}",
                        String::from_utf8_lossy(&rest[..nl])
                    ));
                    rest = &rest[nl + 1..];
                }
                Some(_) => {
                    got.push(format!(
                        "T {name} P {}",
                        String::from_utf8_lossy(&rest[..MAX_LINE])
                    ));
                    rest = &rest[MAX_LINE..];
                }
                None if rest.len() > MAX_LINE => {
                    got.push(format!(
                        "T {name} P {}",
                        String::from_utf8_lossy(&rest[..MAX_LINE])
                    ));
                    rest = &rest[MAX_LINE..];
                }
                None => {
                    got.push(format!("T {name} F {}", String::from_utf8_lossy(rest)));
                    rest = &[];
                }
            }
        }
        got
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_records() {
        // Lines around MAX_LINE (one short, exact, one over, two records' worth) and short ones.
        let mut data = Vec::new();
        for (i, len) in [
            3,
            MAX_LINE - 1,
            0,
            MAX_LINE,
            7,
            MAX_LINE + 1,
            2 * MAX_LINE,
            1,
            2 * MAX_LINE + 5,
        ]
        .into_iter()
        .enumerate()
        {
            data.extend(std::iter::repeat_n(b'a' + i as u8, len));
            data.push(b'\n');
        }
        data.extend_from_slice(b"unterminated");
        let want = reference(Stream::Stderr, &data);
        // A simple deterministic generator of chunk sizes (xorshift).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..200 {
            let max = [
                1,
                7,
                100,
                MAX_LINE - 3,
                MAX_LINE,
                MAX_LINE + 2,
                3 * MAX_LINE,
            ][round % 7];
            let mut chunks = Vec::new();
            let mut rest = &data[..];
            while !rest.is_empty() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let n = (x as usize % max + 1).min(rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(run(Stream::Stderr, &chunks), want, "round {round}");
        }
    }

    #[test]
    fn timestamps_match_chrono() {
        use chrono::{DateTime, SecondsFormat};
        let mut cases = vec![
            (0, 0),
            (951_782_400, 1),               // 2000-02-29
            (1_709_164_800, 999_999_999),   // 2024-02-29
            (4_102_444_799, 123_456_789),   // 2099-12-31T23:59:59
            (253_402_300_799, 999_999_999), // 9999-12-31T23:59:59
        ];
        let mut x: u64 = 88_172_645_463_325_252;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push((x % 253_402_300_800, (x >> 20) as u32 % 1_000_000_000));
        }
        for (secs, nanos) in cases {
            let want = DateTime::from_timestamp(secs as i64, nanos)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Nanos, true);
            assert_eq!(Timestamp::from_unix(secs, nanos).as_str(), want);
        }
        assert_eq!(
            Timestamp::from_unix(u64::MAX, 5).as_str(),
            "9999-12-31T23:59:59.999999999Z"
        );
        let now = Timestamp::now();
        assert!(
            DateTime::parse_from_rfc3339(now.as_str()).is_ok(),
            "{now:?}"
        );
    }

    #[test]
    fn line_of_exactly_max_is_one_full_record() {
        let mut data = vec![b'y'; MAX_LINE];
        data.push(b'\n');
        let got = run(Stream::Stdout, &[&data[..MAX_LINE], &data[MAX_LINE..]]);
        assert_eq!(got, [format!("T stdout F {}", "y".repeat(MAX_LINE))]);
    }
}
