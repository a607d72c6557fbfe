//! CRI container log format: `<RFC3339Nano> <stream> <P|F> <text>\n`.
//!
//! This is the format kubelet's `kubectl logs` reader and log rotation expect (the one containerd
//! and CRI-O write). Output of a stream is split at newlines; each line becomes one record tagged
//! `F` (full). A line longer than [`MAX_LINE`] bytes is written as `P` (partial) records of
//! exactly `MAX_LINE` bytes followed by an `F` record with the rest, as containerd does with its
//! default `max_container_log_line_size`. Text left without a newline when the stream ends is
//! written as an `F` record. Every record is written with a single `write(2)` on an `O_APPEND`
//! file, so a reader never sees half a record and nothing is held in a user-space buffer.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
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
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Opens (creating if needed) a container log file for appending.
pub fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Splits one stream's bytes into CRI records, keeping an incomplete line between reads.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
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

    /// Feeds bytes read from the stream; writes every complete record to `out`.
    ///
    /// `now` gives the timestamp of each record (called once per record).
    pub fn feed<W: Write>(
        &mut self,
        data: &[u8],
        out: &mut W,
        now: &mut dyn FnMut() -> String,
    ) -> io::Result<()> {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) if nl <= MAX_LINE => {
                    write_record(out, &now(), self.stream, 'F', &rest[..nl])?;
                    start += nl + 1;
                }
                // A newline too far away, or none yet but more than a record's worth: the line
                // is longer than MAX_LINE, so its first MAX_LINE bytes are a partial record.
                Some(_) => {
                    write_record(out, &now(), self.stream, 'P', &rest[..MAX_LINE])?;
                    start += MAX_LINE;
                }
                None if rest.len() > MAX_LINE => {
                    write_record(out, &now(), self.stream, 'P', &rest[..MAX_LINE])?;
                    start += MAX_LINE;
                }
                None => break,
            }
        }
        self.pending.drain(..start);
        if self.pending.capacity() > 2 * MAX_LINE + 1 {
            self.pending.shrink_to(MAX_LINE + 1);
        }
        Ok(())
    }

    /// The stream has ended: writes pending text (a last line without newline) as `F`.
    pub fn finish<W: Write>(
        &mut self,
        out: &mut W,
        now: &mut dyn FnMut() -> String,
    ) -> io::Result<()> {
        if !self.pending.is_empty() {
            write_record(out, &now(), self.stream, 'F', &self.pending)?;
            self.pending = Vec::new();
        }
        Ok(())
    }
}

fn write_record<W: Write>(
    out: &mut W,
    ts: &str,
    stream: Stream,
    tag: char,
    text: &[u8],
) -> io::Result<()> {
    let stream = stream.as_str();
    let mut rec = Vec::with_capacity(ts.len() + stream.len() + text.len() + 5);
    rec.extend_from_slice(ts.as_bytes());
    rec.push(b' ');
    rec.extend_from_slice(stream.as_bytes());
    rec.push(b' ');
    rec.push(tag as u8);
    rec.push(b' ');
    rec.extend_from_slice(text);
    rec.push(b'\n');
    out.write_all(&rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stream: Stream, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::new(stream);
        let mut out = Vec::new();
        let mut now = || "T".to_owned();
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

    #[test]
    fn line_of_exactly_max_is_one_full_record() {
        let mut data = vec![b'y'; MAX_LINE];
        data.push(b'\n');
        let got = run(Stream::Stdout, &[&data[..MAX_LINE], &data[MAX_LINE..]]);
        assert_eq!(got, [format!("T stdout F {}", "y".repeat(MAX_LINE))]);
    }
}
