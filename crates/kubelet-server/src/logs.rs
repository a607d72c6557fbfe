//! Container logs as `kubectl logs` reads them through the node API (kubelet's
//! `getContainerLogs` and `kuberuntime/logs`): the query's `PodLogOptions` (`follow`,
//! `previous`, `tailLines`, `limitBytes`, `sinceSeconds`, `sinceTime`, `timestamps`), decoded
//! and validated as kubelet does, and a reader of CRI-format log files
//! (`<RFC3339Nano> <stdout|stderr> <F|P> <text>` per line) that renders what the container
//! wrote: partial chunks joined, a timestamp before each line when asked, stopping after
//! `limitBytes`; with `follow`, it goes on as the file grows (woken by inotify) until the
//! container is no longer running, and reopens the file when it is replaced (rotation).
//!
//! The reader sends its output into a bounded channel: a slow client slows only the reader,
//! never the container (which writes to the file), and a client that goes away ends it.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;

/// The log options of a request (`v1.PodLogOptions` as kubelet reads them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// Entries before this time are skipped (`sinceTime`, or now − `sinceSeconds`).
    pub since: Option<SystemTime>,
}

/// A query kubelet refuses: its status code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub status: u16,
    pub message: String,
}

fn parse_bool(name: &str, v: &str) -> Result<bool, QueryError> {
    // Go's strconv.ParseBool, which kubelet's query decoding uses.
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(QueryError {
            status: 400,
            message: format!("Unable to decode query: {name}: invalid boolean {v:?}"),
        }),
    }
}

fn parse_int(name: &str, v: &str) -> Result<i64, QueryError> {
    v.parse().map_err(|_| QueryError {
        status: 400,
        message: format!("Unable to decode query: {name}: invalid integer {v:?}"),
    })
}

fn invalid(field: &str, value: impl std::fmt::Display, why: &str) -> QueryError {
    QueryError {
        status: 422,
        message: format!("Invalid request: {field}: Invalid value: {value}: {why}"),
    }
}

impl LogOptions {
    /// Decodes and validates the query of `/containerLogs/...` (pairs in order; a later value
    /// of the same name wins, as Go's first-value `Get` would not, so a repeated parameter is
    /// refused). `tail=N` is kubelet's old name for `tailLines`, `tail=all` means no tail.
    pub fn from_query(pairs: &[(String, String)], now: SystemTime) -> Result<Self, QueryError> {
        let mut o = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        let mut seen = std::collections::BTreeSet::new();
        for (k, v) in pairs {
            if !seen.insert(k.as_str()) {
                return Err(QueryError {
                    status: 400,
                    message: format!("Unable to decode query: {k} is given more than once"),
                });
            }
            match k.as_str() {
                "follow" => o.follow = parse_bool(k, v)?,
                "previous" => o.previous = parse_bool(k, v)?,
                "timestamps" => o.timestamps = parse_bool(k, v)?,
                "tailLines" | "tail" => {
                    if k == "tail" && v == "all" {
                        continue;
                    }
                    let n = parse_int(k, v)?;
                    if n < 0 {
                        return Err(invalid(
                            "tailLines",
                            n,
                            "must be greater than or equal to 0",
                        ));
                    }
                    o.tail_lines = Some(n as u64);
                }
                "limitBytes" => {
                    let n = parse_int(k, v)?;
                    if n < 1 {
                        return Err(invalid("limitBytes", n, "must be greater than 0"));
                    }
                    o.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" => {
                    let n = parse_int(k, v)?;
                    if n < 1 {
                        return Err(invalid("sinceSeconds", n, "must be greater than 0"));
                    }
                    since_seconds = Some(n as u64);
                }
                "sinceTime" => {
                    let t = v.parse::<Timestamp>().map_err(|e| QueryError {
                        status: 400,
                        message: format!(
                            "Unable to decode query: sinceTime: {v:?} is not an RFC 3339 time ({e})"
                        ),
                    })?;
                    since_time = Some(SystemTime::from(t));
                }
                // PodLogsQuerySplitStreams is off in v1.34: only "All".
                "stream" if v != "All" => {
                    return Err(QueryError {
                        status: 400,
                        message: format!("unable to return the given log stream: {v:?}. Please enable PodLogsQuerySplitStreams feature gate in kubelet"),
                    });
                }
                // Other fields of PodLogOptions (container, insecureSkipTLSVerifyBackend, ...)
                // change nothing here.
                _ => {}
            }
        }
        o.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => return Err(QueryError {
                status: 422,
                message:
                    "Invalid request: at most one of `sinceTime` or `sinceSeconds` may be specified"
                        .into(),
            }),
            (Some(s), None) => Some(now - Duration::from_secs(s)),
            (None, t) => t,
        };
        Ok(o)
    }
}

/// One decoded CRI log line.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    /// `false` for a partial (`P`) chunk of a longer line.
    pub full: bool,
    pub text: &'a [u8],
}

/// Decodes one CRI log line (without its newline); `None` for a malformed one.
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    let mut it = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(it.next()?).ok()?;
    let stream = std::str::from_utf8(it.next()?).ok()?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let tag = it.next()?;
    let text = it.next().unwrap_or(b"");
    Some(Entry {
        time,
        stream,
        full: tag.split(|b| *b == b':').next() == Some(b"F"),
        text,
    })
}

fn entry_time(e: &Entry<'_>) -> Option<SystemTime> {
    e.time.parse::<Timestamp>().ok().map(SystemTime::from)
}

/// Renders log lines as the container wrote them, keeping count of the limit.
#[derive(Debug)]
pub struct Renderer {
    opts: LogOptions,
    /// Whether the next entry starts a line (the previous one was full).
    at_line_start: bool,
    written: u64,
}

impl Renderer {
    pub fn new(opts: LogOptions) -> Self {
        Renderer {
            opts,
            at_line_start: true,
            written: 0,
        }
    }

    /// Whether `limitBytes` has been reached.
    pub fn done(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }

    /// Appends the rendering of one raw log line to `out`.
    pub fn line(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let Some(e) = parse_line(raw) else {
            return;
        };
        if let Some(since) = self.opts.since {
            if entry_time(&e).is_some_and(|t| t < since) {
                return;
            }
        }
        let start = out.len();
        if self.opts.timestamps && self.at_line_start {
            out.extend_from_slice(e.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(e.text);
        if e.full {
            out.push(b'\n');
        }
        self.at_line_start = e.full;
        let mut added = (out.len() - start) as u64;
        if let Some(limit) = self.opts.limit_bytes {
            let room = limit.saturating_sub(self.written);
            if added > room {
                out.truncate(start + room as usize);
                added = room;
            }
        }
        self.written += added;
    }
}

/// Where the last `n` lines of `data` start (kubelet's `FindTailLineStartIndex`).
pub fn tail_start(data: &[u8], n: u64) -> usize {
    if n == 0 {
        return data.len();
    }
    // A trailing newline ends the last line, it does not start an empty one.
    let end = if data.last() == Some(&b'\n') {
        data.len() - 1
    } else {
        data.len()
    };
    let mut seen = 0;
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Largest chunk sent at once.
const CHUNK: usize = 64 * 1024;
/// How much of the file one read takes.
const READ: usize = 16 * 1024;
/// How often a follower checks that the container is still running (and the file the same)
/// even without an inotify event.
const FOLLOW_CHECK: Duration = Duration::from_millis(500);

/// The shortest time between two sends of one follower when the process has `followers` of
/// them: together they send at most about 1 700 times a second, however fast their
/// containers write. One follower is not paced (0.6 ms is finer than the timer: each line goes
/// out alone, at once); two send at most every 1.2 ms each; 50 followers of a busy container
/// each send every 30 to 60 ms, what was written meanwhile in one chunk; their sends fall on a
/// shared grid ([`paced_until`]). An idle follower's first line always goes out at once: only a
/// follower that has just sent waits.
///
/// Why: each send is a socket write and two task wake-ups; at one write per line, 50 followers
/// of a container writing 1 000 lines a second cost the agent a third of a core. kubelet writes
/// and flushes per line; we keep its latency for the few-follower case and cap the cost when
/// many follow.
pub fn pace(followers: usize) -> Duration {
    let p = (PACE_PER_FOLLOWER * followers.min(u32::MAX as usize) as u32).min(PACE_MAX);
    // Finer than the timer's millisecond it would only round every line up to the next tick.
    if p < PACE_MIN {
        Duration::ZERO
    } else {
        p
    }
}

/// Paces shorter than this are none ([`pace`]): tokio's timer ticks in milliseconds.
const PACE_MIN: Duration = Duration::from_millis(1);

/// When a follower that sent at `sent` may read again with `pace`: at least `pace` later, on
/// the next multiple of `pace` since `epoch` (the process's), so that followers with the same
/// pace wake together, on one timer tick, rather than one after the other: with 50 followers,
/// about 33 wake-ups of the runtime a second instead of 1 700 (thread wake-ups and context
/// switches were most of the cost).
pub fn paced_until(
    sent: tokio::time::Instant,
    pace: Duration,
    epoch: tokio::time::Instant,
) -> tokio::time::Instant {
    let earliest = sent + pace;
    let p = pace.as_nanos();
    if p == 0 || earliest <= epoch {
        return earliest;
    }
    let ticks = (earliest - epoch).as_nanos().div_ceil(p);
    epoch + Duration::from_nanos((ticks * p).min(u64::MAX as u128) as u64)
}

/// The origin of the followers' shared grid ([`paced_until`]).
static EPOCH: std::sync::LazyLock<tokio::time::Instant> =
    std::sync::LazyLock::new(tokio::time::Instant::now);

/// See [`pace`].
const PACE_PER_FOLLOWER: Duration = Duration::from_micros(600);
/// No follower waits longer than this between sends, however many there are.
const PACE_MAX: Duration = Duration::from_millis(50);

/// Reads the log file at `path` with `opts` and sends the rendered bytes to `tx` until done:
/// at end of file, or with `follow`, once `running()` says the container stopped and the rest
/// is read. Returns when the client (the receiver) is gone, too.
///
/// The file is read with plain reads on the calling task, not tokio's blocking pool: log files
/// are local and what a follower reads was just written (the page cache), so a read costs
/// microseconds, and a follower woken 1000 times a second must not pay a thread hand-off each
/// time. Followers share one inotify watcher ([`crate::filewatch`]). After a send, a follower
/// lets `pace()` pass before it reads again ([`pace`]).
pub async fn stream(
    path: PathBuf,
    opts: LogOptions,
    running: impl Fn() -> bool + Send + 'static,
    pace: impl Fn() -> Duration + Send + 'static,
    tx: mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    // Subscribed before the first read, so that nothing written after it goes unnoticed.
    let sub = if opts.follow {
        crate::filewatch::subscribe(&path)
    } else {
        None
    };
    let mut file = std::fs::File::open(&path)?;
    if let Some(n) = opts.tail_lines {
        // The tail is found in the whole file (log files are bounded by rotation).
        let mut all = Vec::new();
        file.read_to_end(&mut all)?;
        let start = tail_start(&all, n);
        file.seek(SeekFrom::Start(start as u64))?;
    }
    let mut reader = LineReader::new(file);
    let mut renderer = Renderer::new(opts.clone());
    let mut out = Vec::new();
    // The file now at the path when it was replaced (rotation): read once the old one is done.
    let mut next: Option<std::fs::File> = None;
    // The container stopped: this pass to the end of the file is the last.
    let mut stopping = false;
    // When this follower last sent: it waits out its pace after that.
    let mut sent_at: Option<tokio::time::Instant> = None;
    // Checks the container and the file now and then even without an inotify event; one timer
    // for the whole follow, not one per wake-up.
    let mut check = tokio::time::interval(FOLLOW_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    loop {
        // Everything there is now, in chunks of at most CHUNK.
        loop {
            let n = reader.read_lines(&mut renderer, &mut out)?;
            if (n == 0 || out.len() >= CHUNK || renderer.done()) && !out.is_empty() {
                if !send(&tx, &mut out).await {
                    return Ok(());
                }
                sent_at = Some(tokio::time::Instant::now());
            }
            if renderer.done() || (!opts.follow && n == 0) {
                return Ok(());
            }
            if n > 0 {
                continue;
            }
            if let Some(f) = next.take() {
                reader = LineReader::new(f);
            } else if stopping {
                // The writer is gone: a last line without its newline is complete too.
                reader.finish(&mut renderer, &mut out);
                if !out.is_empty() {
                    send(&tx, &mut out).await;
                }
                return Ok(());
            } else {
                break;
            }
        }
        // Wait for more, the container's exit, or the client leaving.
        if !running() {
            stopping = true;
            continue;
        }
        // Paced: having just sent, let the pace pass; what is written meanwhile is read at
        // once after it, so the wake-ups it caused are spent.
        if let Some(until) = sent_at.take().map(|t| paced_until(t, pace(), *EPOCH)) {
            if until > tokio::time::Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = tx.closed() => return Ok(()),
                }
                if let Some(s) = &sub {
                    use futures::FutureExt;
                    let _ = s.signal().changed().now_or_never();
                    if s.signal().take_replaced() {
                        reopen_if_replaced(&path, &reader, &mut next);
                    }
                }
                continue;
            }
        }
        let woken = async {
            match &sub {
                Some(s) => s.signal().changed().await,
                None => std::future::pending().await,
            }
        };
        let maybe_replaced = tokio::select! {
            _ = woken => sub.as_ref().is_some_and(|s| s.signal().take_replaced()),
            _ = check.tick() => true,
            _ = tx.closed() => return Ok(()),
        };
        if maybe_replaced {
            reopen_if_replaced(&path, &reader, &mut next);
        }
    }
}

/// Opens the file now at `path` as `next` when it is not the one being read (rotation).
fn reopen_if_replaced(path: &Path, reader: &LineReader, next: &mut Option<std::fs::File>) {
    if next.is_some() {
        return;
    }
    if let Ok(f) = std::fs::File::open(path) {
        if file_id(&f).is_some() && file_id(&f) != file_id(&reader.file) {
            *next = Some(f);
        }
    }
}

/// Sends `out` (emptied) to the client; false when it is gone.
async fn send(tx: &mpsc::Sender<Bytes>, out: &mut Vec<u8>) -> bool {
    let chunk = Bytes::copy_from_slice(out);
    out.clear();
    tx.send(chunk).await.is_ok()
}

/// A log file read in chunks, split into lines; a line not yet complete is kept for the next
/// read.
struct LineReader {
    file: std::fs::File,
    chunk: Vec<u8>,
    partial: Vec<u8>,
}

impl LineReader {
    fn new(file: std::fs::File) -> Self {
        LineReader {
            file,
            chunk: vec![0; READ],
            partial: Vec::new(),
        }
    }

    /// Reads once and renders every line completed by it into `out`; the bytes read (0 at the
    /// end of the file).
    fn read_lines(&mut self, r: &mut Renderer, out: &mut Vec<u8>) -> std::io::Result<usize> {
        let n = loop {
            match self.file.read(&mut self.chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        let mut rest = &self.chunk[..n];
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                r.line(&rest[..i], out);
            } else {
                self.partial.extend_from_slice(&rest[..i]);
                r.line(&self.partial, out);
                self.partial.clear();
            }
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(n)
    }

    /// Renders the last line even without its newline (the writer is gone).
    fn finish(&mut self, r: &mut Renderer, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            r.line(&self.partial, out);
            self.partial.clear();
        }
    }
}

/// The device and inode of an open file.
fn file_id(f: &std::fs::File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    f.metadata().ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
#[path = "logs_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_decode_and_validate_as_kubelet() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let o = LogOptions::from_query(
            &q(&[
                ("follow", "true"),
                ("previous", "1"),
                ("timestamps", "t"),
                ("tailLines", "10"),
                ("limitBytes", "500"),
                ("sinceSeconds", "60"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                previous: true,
                timestamps: true,
                tail_lines: Some(10),
                limit_bytes: Some(500),
                since: Some(now - Duration::from_secs(60)),
            }
        );
        let t = LogOptions::from_query(&q(&[("sinceTime", "1970-01-12T13:46:40Z")]), now).unwrap();
        assert_eq!(t.since, Some(now));
        assert_eq!(
            LogOptions::from_query(&q(&[("tail", "all")]), now).unwrap(),
            LogOptions::default()
        );
        assert_eq!(
            LogOptions::from_query(&q(&[("tail", "3")]), now)
                .unwrap()
                .tail_lines,
            Some(3)
        );
        let err = |pairs: &[(&str, &str)]| LogOptions::from_query(&q(pairs), now).unwrap_err();
        let e = err(&[("tailLines", "-5")]);
        assert_eq!(e.status, 422);
        assert!(
            e.message.contains("tailLines") && e.message.contains("-5"),
            "{e:?}"
        );
        assert_eq!(err(&[("limitBytes", "0")]).status, 422);
        assert_eq!(err(&[("sinceSeconds", "0")]).status, 422);
        assert_eq!(
            err(&[("sinceSeconds", "5"), ("sinceTime", "2024-01-01T00:00:00Z")]).status,
            422
        );
        let e = err(&[("sinceTime", "yesterday")]);
        assert_eq!(e.status, 400);
        assert!(e.message.contains("sinceTime"), "{e:?}");
        assert_eq!(err(&[("follow", "maybe")]).status, 400);
        assert_eq!(err(&[("tailLines", "ten")]).status, 400);
        assert_eq!(err(&[("tailLines", "1"), ("tailLines", "2")]).status, 400);
        assert_eq!(err(&[("stream", "Stdout")]).status, 400);
    }

    #[test]
    fn lines_render_as_written() {
        let mut r = Renderer::new(LogOptions::default());
        let mut out = Vec::new();
        for l in [
            "2026-01-01T00:00:00.1Z stdout F hello",
            "2026-01-01T00:00:00.2Z stderr P abc",
            "2026-01-01T00:00:00.3Z stderr F def",
            "garbage",
            "2026-01-01T00:00:00.4Z stdout F ",
        ] {
            r.line(l.as_bytes(), &mut out);
        }
        assert_eq!(out, b"hello\nabcdef\n\n");

        let mut r = Renderer::new(LogOptions {
            timestamps: true,
            ..Default::default()
        });
        let mut out = Vec::new();
        r.line(b"2026-01-01T00:00:00.2Z stderr P abc", &mut out);
        r.line(b"2026-01-01T00:00:00.3Z stderr F def", &mut out);
        assert_eq!(
            out, b"2026-01-01T00:00:00.2Z abcdef\n",
            "one timestamp per line"
        );
    }

    #[test]
    fn since_and_limit() {
        let since = SystemTime::from("2026-01-01T00:00:01Z".parse::<Timestamp>().unwrap());
        let mut r = Renderer::new(LogOptions {
            since: Some(since),
            limit_bytes: Some(7),
            ..Default::default()
        });
        let mut out = Vec::new();
        r.line(b"2026-01-01T00:00:00.9Z stdout F old", &mut out);
        r.line(b"2026-01-01T00:00:01.5Z stdout F new1", &mut out);
        assert!(!r.done());
        r.line(b"2026-01-01T00:00:02Z stdout F new2", &mut out);
        assert_eq!(out, b"new1\nne", "cut at exactly limitBytes");
        assert!(r.done());
    }

    #[test]
    fn tail_finds_the_last_lines() {
        let d = b"a\nb\nc\n";
        assert_eq!(&d[tail_start(d, 2)..], b"b\nc\n");
        assert_eq!(&d[tail_start(d, 5)..], d);
        assert_eq!(tail_start(d, 0), d.len());
        let partial = b"a\nb\nc";
        assert_eq!(&partial[tail_start(partial, 1)..], b"c");
        assert_eq!(tail_start(b"", 3), 0);
    }

    #[tokio::test]
    async fn follow_ends_when_the_container_stops_and_reads_the_rest() {
        use std::io::Write;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "2026-01-01T00:00:00Z stdout F one").unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(4);
        let r = running.clone();
        let task = tokio::spawn(stream(
            path.clone(),
            LogOptions {
                follow: true,
                ..Default::default()
            },
            move || r.load(Ordering::SeqCst),
            || Duration::ZERO,
            tx,
        ));
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"one\n"));
        writeln!(f, "2026-01-01T00:00:01Z stdout F two").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Bytes::from_static(b"two\n"));
        writeln!(f, "2026-01-01T00:00:02Z stdout F three").unwrap();
        running.store(false, Ordering::SeqCst);
        let mut rest = Vec::new();
        while let Some(b) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
        {
            rest.extend_from_slice(&b);
        }
        assert_eq!(rest, b"three\n");
        task.await.unwrap().unwrap();
    }

    /// Receives into `got` until it ends with `want`; all of it so far.
    async fn until(rx: &mut mpsc::Receiver<Bytes>, got: &mut Vec<u8>, want: &[u8]) -> Vec<u8> {
        while !got.ends_with(want) {
            let b = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("more output")
                .expect("still following");
            got.extend_from_slice(&b);
        }
        got.clone()
    }

    #[tokio::test]
    async fn follow_reads_the_old_file_to_its_end_then_the_rotated_one() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut old = std::fs::File::create(&path).unwrap();
        writeln!(old, "2026-01-01T00:00:00Z stdout F one").unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(stream(
            path.clone(),
            LogOptions {
                follow: true,
                ..Default::default()
            },
            || true,
            || Duration::ZERO,
            tx,
        ));
        let mut got = Vec::new();
        until(&mut rx, &mut got, b"one\n").await;
        // Rotation as the writer does it: the old file moved aside, still written a little,
        // then a new file at the path.
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        writeln!(old, "2026-01-01T00:00:01Z stdout F two").unwrap();
        let mut new = std::fs::File::create(&path).unwrap();
        writeln!(new, "2026-01-01T00:00:02Z stdout F three").unwrap();
        assert_eq!(
            until(&mut rx, &mut got, b"three\n").await,
            b"one\ntwo\nthree\n"
        );
        writeln!(new, "2026-01-01T00:00:03Z stdout F four").unwrap();
        assert_eq!(
            until(&mut rx, &mut got, b"four\n").await,
            b"one\ntwo\nthree\nfour\n"
        );
        drop(rx);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("ended")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_client_that_leaves_ends_the_follower() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2026-01-01T00:00:00Z stdout F one\n").unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let task = tokio::spawn(stream(
            path,
            LogOptions {
                follow: true,
                ..Default::default()
            },
            || true,
            || Duration::ZERO,
            tx,
        ));
        rx.recv().await.unwrap();
        drop(rx);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("ended")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn pace_grows_with_the_followers_and_is_capped() {
        for (followers, want_us) in [
            (0, 0),
            (1, 0),
            (2, 1_200),
            (50, 30_000),
            (83, 49_800),
            (84, 50_000),
            (10_000, 50_000),
            (usize::MAX, 50_000),
        ] {
            assert_eq!(
                pace(followers),
                Duration::from_micros(want_us),
                "{followers} followers"
            );
        }
    }

    #[test]
    fn paced_followers_wake_on_a_shared_grid() {
        let epoch = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        for (sent_ms, pace_ms, want_ms) in [
            // At least the pace after the send, rounded up to the grid.
            (0, 20, 20),
            (1, 20, 40),
            (19, 20, 40),
            (20, 20, 40),
            (21, 20, 60),
            // Two followers that sent at different times wake together.
            (3, 20, 40),
            (17, 20, 40),
            // No pacing: at once.
            (7, 0, 7),
        ] {
            assert_eq!(
                paced_until(epoch + ms(sent_ms), ms(pace_ms), epoch),
                epoch + ms(want_ms),
                "sent at {sent_ms} ms, pace {pace_ms} ms"
            );
        }
    }

    #[tokio::test]
    async fn a_paced_follower_sends_what_came_meanwhile_in_one_chunk() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "2026-01-01T00:00:00Z stdout F one").unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(stream(
            path.clone(),
            LogOptions {
                follow: true,
                ..Default::default()
            },
            || true,
            // Long enough that the three writes below surely land within it.
            || Duration::from_secs(1),
            tx,
        ));
        // An idle follower's first line goes out at once and alone.
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"one\n"));
        for (i, w) in ["two", "three", "four"].iter().enumerate() {
            writeln!(f, "2026-01-01T00:00:0{}Z stdout F {w}", i + 1).unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Bytes::from_static(b"two\nthree\nfour\n"));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("ended")
            .unwrap()
            .unwrap();
    }
}
