//! Fuzz targets of the log reader (issue 16 item 3):
//!
//! - `cri_log_reader`: CRI log files (seeds `fuzz/seeds/cri-log`) read by [`LineReader`] in
//!   chunks of every size from 1 byte up, rendered with options the input picks (timestamps,
//!   `limitBytes`, `sinceTime`), must render exactly what rendering the file's lines one by one
//!   does; [`parse_line`] and [`tail_start`] keep their contracts.
//! - `log_query`: `/containerLogs` queries (seeds `fuzz/seeds/log-query`) decode to options or
//!   a 400/422 with a message, never a panic.

#[path = "../../../fuzz/mutate.rs"]
mod mutate;

use std::io::{Seek, Write};
use std::time::{Duration, SystemTime};

use super::*;

fn options(pick: u8) -> LogOptions {
    LogOptions {
        timestamps: pick & 1 != 0,
        limit_bytes: (pick & 2 != 0).then_some(u64::from(pick >> 3) + 1),
        since: (pick & 4 != 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_201)),
        ..Default::default()
    }
}

#[test]
fn cri_log_reader() {
    let seeds = mutate::seeds(&["fuzz/seeds/cri-log"]);
    let runs = mutate::Runs::new("cri_log_reader");
    bolero::check!()
        .with_iterations(mutate::iterations(15_000))
        .with_max_len(mutate::MAX_RECIPE + 2)
        .for_each(|recipe: &[u8]| {
            runs.hit();
            let (pick, chunk, recipe) = match recipe {
                [a, b, rest @ ..] => (*a, *b as usize % 64 + 1, rest),
                _ => (0, 16, recipe),
            };
            let data = mutate::mutate(&seeds, recipe);
            for line in data.split(|b| *b == b'\n') {
                if let Some(e) = parse_line(line) {
                    runs.accept();
                    assert!(e.stream == "stdout" || e.stream == "stderr");
                    assert!(e.text.len() < line.len());
                }
            }
            for n in [0, 1, 2, 5, 1000] {
                let start = tail_start(&data, n);
                if n == 0 {
                    assert_eq!(start, data.len());
                } else {
                    assert!(start == 0 || data[start - 1] == b'\n');
                    let lines = data[start..].strip_suffix(b"\n").unwrap_or(&data[start..]);
                    assert!(lines.iter().filter(|b| **b == b'\n').count() < n as usize);
                }
            }
            // The reference: every line of the file rendered in order.
            let mut want = Vec::new();
            let mut r = Renderer::new(options(pick));
            let body = data.strip_suffix(b"\n").unwrap_or(&data);
            if !data.is_empty() {
                for line in body.split(|b| *b == b'\n') {
                    r.line(line, &mut want);
                }
            }
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(&data).unwrap();
            file.rewind().unwrap();
            let mut reader = LineReader {
                file,
                chunk: vec![0; chunk],
                partial: Vec::new(),
            };
            let mut got = Vec::new();
            let mut r = Renderer::new(options(pick));
            while reader.read_lines(&mut r, &mut got).unwrap() > 0 {}
            reader.finish(&mut r, &mut got);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "chunk {chunk}"
            );
            if let Some(limit) = options(pick).limit_bytes {
                assert!(got.len() as u64 <= limit);
            }
        });
}

#[test]
fn log_query() {
    let seeds = mutate::seeds(&["fuzz/seeds/log-query"]);
    let runs = mutate::Runs::new("log_query");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    bolero::check!()
        .with_iterations(mutate::iterations(20_000))
        .with_max_len(mutate::MAX_RECIPE)
        .for_each(|recipe: &[u8]| {
            runs.hit();
            let query = mutate::mutate(&seeds, recipe);
            let query = String::from_utf8_lossy(&query);
            let pairs: Vec<(String, String)> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv.to_string(), String::new()),
                })
                .collect();
            match LogOptions::from_query(&pairs, now) {
                Ok(o) => {
                    runs.accept();
                    assert!(o.limit_bytes != Some(0));
                }
                Err(e) => {
                    assert!(e.status == 400 || e.status == 422, "{e:?}");
                    assert!(!e.message.is_empty());
                }
            }
        });
}
