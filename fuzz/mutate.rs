//! Input shaping shared by the fuzz targets (issue 16 item 3), included by each target with
//! `#[path]`. Every target runs under `cargo test` with bolero's random inputs (an explicit
//! iteration count; `STATICLET_FUZZ_ITERATIONS` overrides it for long runs) and under
//! `cargo bolero test` (libFuzzer) for long runs (`bench/fuzz.sh`).
//!
//! Purely random bytes rarely get past a parser's first check, so a target's input is read as
//! a recipe: the first byte picks one of the target's seeds (a small corpus in the repository),
//! the rest is a list of 4-byte edits applied to it (set, insert, remove, truncate, duplicate,
//! splice in a token that matters to the format). A first byte of 255 takes the rest verbatim.

#![allow(dead_code)]
// Test-time measurements in real time.
#![allow(clippy::disallowed_types)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Tokens spliced in by the edits: syntax of YAML/JSON/HTTP/tar paths, and boundary numbers.
const TOKENS: &[&[u8]] = &[
    b"\n",
    b": ",
    b"- ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b"0",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"9223372036854775807",
    b"null",
    b"true",
    b"..",
    b"/",
    b"\0",
    b"%",
    b"%ff",
    b"&a",
    b"*a",
    b"!!binary",
    b"\xff\xfe",
    b"\xe2\x80\x8b",
    b"?",
    b"=",
    b" F ",
    b" P ",
    b"stdout",
    b"stderr",
    b"2024-01-01T00:00:00Z",
    b"::",
    b"/0",
    b"/129",
];

/// The files of `dirs` (relative to the repository root), sorted: a target's seeds.
pub fn seeds(dirs: &[&str]) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for d in dirs {
        let mut stack = vec![root.join(d)];
        while let Some(p) = stack.pop() {
            match std::fs::read_dir(&p) {
                Ok(entries) => stack.extend(entries.flatten().map(|e| e.path())),
                Err(_) if p.is_file() => files.push(p),
                Err(e) => panic!("fuzz seeds {}: {e}", p.display()),
            }
        }
    }
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "no fuzz seeds in {dirs:?}");
    seeds
}

/// The input a recipe makes from `seeds` (see the module docs).
pub fn mutate(seeds: &[Vec<u8>], recipe: &[u8]) -> Vec<u8> {
    let Some((&first, edits)) = recipe.split_first() else {
        return seeds[0].clone();
    };
    if first == 255 {
        return edits.to_vec();
    }
    let mut out = seeds[first as usize % seeds.len()].clone();
    for e in edits.chunks(4) {
        let mut b = [0u8; 4];
        b[..e.len()].copy_from_slice(e);
        let [op, lo, hi, v] = b;
        let pos = u16::from_le_bytes([lo, hi]) as usize % (out.len() + 1);
        match op % 7 {
            0 if pos < out.len() => out[pos] = v,
            1 => out.insert(pos, v),
            2 if pos < out.len() => {
                out.remove(pos);
            }
            3 if v < 16 => out.truncate(pos),
            4 => {
                let end = (pos + v as usize).min(out.len());
                let copy = out[pos..end].to_vec();
                out.splice(pos..pos, copy);
            }
            5 | 6 => {
                let t = TOKENS[v as usize % TOKENS.len()];
                out.splice(pos..pos, t.iter().copied());
            }
            _ => {}
        }
    }
    out
}

/// Longest recipe: up to 6 edits, so most inputs stay close enough to a seed to get deep.
pub const MAX_RECIPE: usize = 25;

/// Iterations of one target: `default`, or `STATICLET_FUZZ_ITERATIONS`.
pub fn iterations(default: usize) -> usize {
    std::env::var("STATICLET_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts a target's executions and reports them when dropped (visible with `--nocapture`).
pub struct Runs {
    name: &'static str,
    count: AtomicU64,
    accepted: AtomicU64,
    started: Instant,
}

impl Runs {
    pub fn new(name: &'static str) -> Self {
        Runs {
            name,
            count: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub fn hit(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an input the code under test accepted (to see that inputs get past the parser).
    pub fn accept(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        eprintln!(
            "fuzz target {}: {} executions ({} accepted) in {:.2?}",
            self.name,
            self.count(),
            self.accepted.load(Ordering::Relaxed),
            self.elapsed()
        );
    }
}
