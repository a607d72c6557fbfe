use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn decode_all(dec: &mut FrameDecoder, bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(&mut buf)? {
        frames.push(f);
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(frames)
}

fn encode(enc: &mut FrameEncoder, frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    enc.encode(frame, &mut out).expect("encode");
    out.to_vec()
}

fn decode_one(bytes: &[u8]) -> Result<Frame, FrameError> {
    let mut dec = FrameDecoder::new(Limits::default());
    let mut frames = decode_all(&mut dec, bytes)?;
    assert_eq!(frames.len(), 1);
    Ok(frames.remove(0))
}

/// Frames without header blocks, byte for byte as the specification lays them out.
#[test]
fn fixed_frames_match_hand_built_bytes() {
    let cases: Vec<(Frame, Vec<u8>)> = vec![
        (
            Frame::Ping { id: 7 },
            vec![0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7],
        ),
        (
            Frame::RstStream {
                stream_id: 5,
                status: RstStatus::CANCEL,
            },
            vec![0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 5],
        ),
        (
            Frame::GoAway {
                last_good_stream_id: 9,
                status: GoAwayStatus::PROTOCOL_ERROR,
            },
            vec![0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 1],
        ),
        (
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 0x1_0000,
            },
            vec![0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0, 1, 0, 0],
        ),
        (
            Frame::Settings {
                flags: 0,
                entries: vec![Setting {
                    flags: 1,
                    id: settings::INITIAL_WINDOW_SIZE,
                    value: 0x1_0000,
                }],
            },
            vec![
                0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 1, 0, 0, 7, 0, 1, 0, 0,
            ],
        ),
        (
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::from_static(b"hi"),
            },
            vec![0, 0, 0, 3, 1, 0, 0, 2, b'h', b'i'],
        ),
        (
            Frame::Data {
                stream_id: 0x7fff_ffff,
                fin: false,
                data: Bytes::new(),
            },
            vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        ),
    ];
    for (frame, bytes) in cases {
        let mut enc = FrameEncoder::new();
        assert_eq!(encode(&mut enc, &frame), bytes, "encoding {frame:?}");
        assert_eq!(
            decode_one(&bytes).expect("decode"),
            frame,
            "decoding {bytes:?}"
        );
    }
}

#[test]
fn reserved_bits_are_ignored_on_decode() {
    // Reserved high bit of the stream id set in RST_STREAM and WINDOW_UPDATE.
    let rst = [0x80, 3, 0, 3, 0, 0, 0, 8, 0x80, 0, 0, 5, 0, 0, 0, 1];
    assert_eq!(
        decode_one(&rst).unwrap(),
        Frame::RstStream {
            stream_id: 5,
            status: RstStatus::PROTOCOL_ERROR
        }
    );
    let wu = [0x80, 3, 0, 9, 0, 0, 0, 8, 0x80, 0, 0, 1, 0x80, 0, 0, 2];
    assert_eq!(
        decode_one(&wu).unwrap(),
        Frame::WindowUpdate {
            stream_id: 1,
            delta: 2
        }
    );
}

#[test]
fn header_frames_round_trip() {
    let headers = Headers::new()
        .with("streamType", "stdout")
        .with("port", "8080");
    let mut multi = Headers::new();
    multi.append("x-many", "a");
    multi.append("x-many", "b");
    let frames = vec![
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 7,
            slot: 0,
            flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
            headers: headers.clone(),
        },
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new(),
        },
        Frame::Headers {
            stream_id: 1,
            fin: true,
            headers: multi,
        },
        Frame::SynStream {
            stream_id: 3,
            associated_to: 1,
            priority: 2,
            slot: 4,
            flags: 0,
            headers,
        },
    ];
    let mut enc = FrameEncoder::new();
    let mut wire = Vec::new();
    for f in &frames {
        wire.extend(encode(&mut enc, f));
    }
    let mut dec = FrameDecoder::new(Limits::default());
    assert_eq!(decode_all(&mut dec, &wire).unwrap(), frames);
    let Frame::SynStream { headers, .. } = &frames[0] else {
        unreachable!()
    };
    assert_eq!(headers.get("StreamType"), Some("stdout"));
    assert_eq!(headers.get("streamtype"), Some("stdout"));
}

/// The zlib stream carries over: 200 header frames in a row decode in order, later blocks are
/// far smaller than the first, and a block decoded out of order fails.
#[test]
fn header_compression_state_spans_frames() {
    let mut enc = FrameEncoder::new();
    let mut blocks = Vec::new();
    for i in 0..200u32 {
        let f = Frame::SynStream {
            stream_id: 2 * i + 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: Headers::new()
                .with(
                    "streamtype",
                    ["error", "stdin", "stdout", "stderr"][i as usize % 4],
                )
                .with("requestid", i.to_string()),
        };
        blocks.push((f.clone(), encode(&mut enc, &f)));
    }
    assert!(blocks[150].1.len() < blocks[0].1.len());
    let mut dec = FrameDecoder::new(Limits::default());
    for (frame, bytes) in &blocks {
        assert_eq!(decode_all(&mut dec, bytes).unwrap(), vec![frame.clone()]);
    }
    // A fresh decoder cannot take the 2nd block without the 1st (no zlib header, missing
    // history).
    let mut fresh = FrameDecoder::new(Limits::default());
    assert!(decode_all(&mut fresh, &blocks[1].1).is_err());
}

/// Two SYN_STREAM frames as Go's spdystream (v0.5.1, `spdy.Framer`) wrote them — the second
/// with FLAG_FIN and relying on the first one's compression history. The zlib header names the
/// dictionary by its Adler-32 (`e3c6a7c2`), so this also checks the dictionary byte for byte.
#[test]
fn decodes_header_blocks_written_by_spdystream() {
    let first = hex(
        "800300010000003e0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0\
         808614cb45e01c60616061c0c0c0c0590489c64c50f2663400000000ffff",
    );
    let second = hex("800300010100001a00000003000000000000826a26ac0ad57850499508000000ffff");
    let mut dec = FrameDecoder::new(Limits::default());
    let frames = decode_all(&mut dec, &[first, second].concat()).unwrap();
    let expect = |id, flags, ty: &str| Frame::SynStream {
        stream_id: id,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags,
        headers: Headers::new()
            .with("streamtype", ty)
            .with("port", "8080")
            .with("requestid", "0"),
    };
    assert_eq!(
        frames,
        vec![expect(1, 0, "error"), expect(3, FLAG_FIN, "data")]
    );
}

#[test]
fn incomplete_input_consumes_nothing() {
    let mut enc = FrameEncoder::new();
    let bytes = encode(
        &mut enc,
        &Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: Headers::new().with("a", "b"),
        },
    );
    let mut dec = FrameDecoder::new(Limits::default());
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(dec.decode(&mut buf), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut);
    }
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        dec.decode(&mut buf),
        Ok(Some(Frame::SynStream { .. }))
    ));
}

/// Builds a control frame around an arbitrary payload.
fn control(ty: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    control_header(&mut out, ty, flags, payload.len()).unwrap();
    out.put_slice(payload);
    out.to_vec()
}

/// A SYN_STREAM whose header block is `raw`, compressed on a fresh zlib stream.
fn syn_stream_with_raw_block(raw: &[u8]) -> Vec<u8> {
    let mut enc = FrameEncoder::new();
    let block = enc.deflate_block(raw).unwrap();
    let mut payload = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    payload.extend(block);
    control(TYPE_SYN_STREAM, 0, &payload)
}

fn pair(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name);
    v.extend_from_slice(&(value.len() as u32).to_be_bytes());
    v.extend_from_slice(value);
    v
}

#[test]
fn malformed_input_gives_typed_errors() {
    let big = [0x80, 3, 0, 0, 0, 0x20, 0, 0];
    type Check = fn(&FrameError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("oversized frame", big.to_vec(), |e| {
            matches!(e, FrameError::FrameTooLarge { len: 0x20_0000, .. })
        }),
        (
            "SPDY/2 control frame",
            vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1],
            |e| matches!(e, FrameError::UnsupportedVersion(2)),
        ),
        ("DATA on stream 0", vec![0, 0, 0, 0, 0, 0, 0, 0], |e| {
            matches!(e, FrameError::ZeroStreamId { frame: "DATA" })
        }),
        (
            "short RST_STREAM",
            control(TYPE_RST_STREAM, 0, &[0, 0, 0, 1]),
            |e| {
                matches!(
                    e,
                    FrameError::InvalidLength {
                        frame: "RST_STREAM",
                        len: 4
                    }
                )
            },
        ),
        (
            "RST_STREAM status 0",
            control(TYPE_RST_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
            |e| matches!(e, FrameError::ZeroRstStatus { stream_id: 1 }),
        ),
        (
            "RST_STREAM stream 0",
            control(TYPE_RST_STREAM, 0, &[0, 0, 0, 0, 0, 0, 0, 5]),
            |e| matches!(e, FrameError::ZeroStreamId { .. }),
        ),
        (
            "SETTINGS count beyond its length",
            control(TYPE_SETTINGS, 0, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 7]),
            |e| {
                matches!(
                    e,
                    FrameError::InvalidLength {
                        frame: "SETTINGS",
                        ..
                    }
                )
            },
        ),
        ("long PING", control(TYPE_PING, 0, &[0; 8]), |e| {
            matches!(
                e,
                FrameError::InvalidLength {
                    frame: "PING",
                    len: 8
                }
            )
        }),
        ("short GOAWAY", control(TYPE_GOAWAY, 0, &[0; 4]), |e| {
            matches!(
                e,
                FrameError::InvalidLength {
                    frame: "GOAWAY",
                    len: 4
                }
            )
        }),
        (
            "short WINDOW_UPDATE",
            control(TYPE_WINDOW_UPDATE, 0, &[0; 7]),
            |e| matches!(e, FrameError::InvalidLength { .. }),
        ),
        (
            "short SYN_STREAM",
            control(TYPE_SYN_STREAM, 0, &[0; 9]),
            |e| matches!(e, FrameError::InvalidLength { .. }),
        ),
        (
            "short SYN_REPLY",
            control(TYPE_SYN_REPLY, 0, &[0; 3]),
            |e| matches!(e, FrameError::InvalidLength { .. }),
        ),
        (
            "header block that is not zlib",
            control(TYPE_SYN_REPLY, 0, &[0, 0, 0, 1, 1, 2, 3, 4, 5, 6]),
            |e| matches!(e, FrameError::Decompress(_)),
        ),
        (
            "empty header block",
            control(TYPE_SYN_REPLY, 0, &[0, 0, 0, 1]),
            |e| matches!(e, FrameError::MalformedHeaderBlock(_)),
        ),
        (
            "pair count the block cannot hold",
            syn_stream_with_raw_block(&[0xff, 0xff, 0xff, 0xff]),
            |e| matches!(e, FrameError::MalformedHeaderBlock(_)),
        ),
        (
            "name length past the block",
            syn_stream_with_raw_block(&[0, 0, 0, 1, 0xff, 0, 0, 0, b'a', 0, 0, 0, 0]),
            |e| matches!(e, FrameError::MalformedHeaderBlock(_)),
        ),
        (
            "empty name",
            syn_stream_with_raw_block(&[[0, 0, 0, 1].as_slice(), &pair(b"", b"v")].concat()),
            |e| matches!(e, FrameError::MalformedHeaderBlock(_)),
        ),
        (
            "duplicate name",
            syn_stream_with_raw_block(
                &[
                    [0, 0, 0, 2].as_slice(),
                    &pair(b"a", b"1"),
                    &pair(b"A", b"2"),
                ]
                .concat(),
            ),
            |e| matches!(e, FrameError::MalformedHeaderBlock(_)),
        ),
        (
            "bytes after the last pair",
            syn_stream_with_raw_block(&[[0, 0, 0, 1].as_slice(), &pair(b"a", b"1"), b"x"].concat()),
            |e| matches!(e, FrameError::MalformedHeaderBlock(_)),
        ),
        (
            "value not UTF-8",
            syn_stream_with_raw_block(&[[0, 0, 0, 1].as_slice(), &pair(b"a", &[0xff])].concat()),
            |e| matches!(e, FrameError::MalformedHeaderBlock(_)),
        ),
        (
            "SYN_STREAM for stream 0",
            {
                let mut enc = FrameEncoder::new();
                let block = enc.deflate_block(&[0, 0, 0, 0]).unwrap();
                control(TYPE_SYN_STREAM, 0, &[&[0u8; 10][..], &block].concat())
            },
            |e| {
                matches!(
                    e,
                    FrameError::ZeroStreamId {
                        frame: "SYN_STREAM"
                    }
                )
            },
        ),
    ];
    for (what, bytes, check) in cases {
        match decode_one(&bytes) {
            Err(e) => assert!(check(&e), "{what}: unexpected error {e:?}"),
            Ok(f) => panic!("{what}: decoded {f:?}"),
        }
    }
}

#[test]
fn header_block_limit_is_enforced() {
    let mut enc = FrameEncoder::new();
    let bytes = encode(
        &mut enc,
        &Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new().with("big", "x".repeat(100_000)),
        },
    );
    // Highly compressible: the frame is small, the block is not.
    assert!(bytes.len() < 2_000);
    let mut dec = FrameDecoder::new(Limits {
        max_frame_len: 1 << 20,
        max_header_block: 64 * 1024,
    });
    assert_eq!(
        decode_all(&mut dec, &bytes),
        Err(FrameError::HeaderBlockTooLarge { max: 64 * 1024 })
    );
    let mut roomy = FrameDecoder::new(Limits::default());
    assert_eq!(decode_all(&mut roomy, &bytes).unwrap().len(), 1);
}

#[test]
fn unknown_control_frames_are_skipped() {
    let mut wire = control(0x0a, 0, &[1, 2, 3]);
    wire.extend(control(TYPE_PING, 0, &[0, 0, 0, 1]));
    let mut dec = FrameDecoder::new(Limits::default());
    assert_eq!(
        decode_all(&mut dec, &wire).unwrap(),
        vec![
            Frame::Unknown {
                frame_type: 0x0a,
                flags: 0,
                len: 3
            },
            Frame::Ping { id: 1 }
        ]
    );
}

#[test]
fn encoder_refuses_invalid_frames() {
    let mut enc = FrameEncoder::new();
    let mut out = BytesMut::new();
    for f in [
        Frame::Data {
            stream_id: 0,
            fin: false,
            data: Bytes::new(),
        },
        Frame::WindowUpdate {
            stream_id: 1,
            delta: 0,
        },
        Frame::RstStream {
            stream_id: 1,
            status: RstStatus(0),
        },
        Frame::Ping { id: 1 }, // valid: control
    ] {
        let ok = matches!(f, Frame::Ping { .. });
        assert_eq!(enc.encode(&f, &mut out).is_ok(), ok, "{f:?}");
    }
    assert_eq!(out.len(), 12, "only the PING was written");
}

/// A small deterministic generator (xorshift64*), so the fuzz loops below are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random bytes, and valid frame streams with random corruptions, never panic the decoder, and
/// each decode either consumes a whole frame, asks for more, or fails.
#[test]
fn decoder_never_panics_on_random_or_corrupted_input() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let limits = Limits {
        max_frame_len: 64 * 1024,
        max_header_block: 64 * 1024,
    };
    // A valid stream of frames to corrupt.
    let mut enc = FrameEncoder::new();
    let mut valid = Vec::new();
    for i in 0..20u32 {
        valid.extend(encode(
            &mut enc,
            &Frame::SynStream {
                stream_id: 2 * i + 1,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: Headers::new()
                    .with("streamtype", "stdout")
                    .with("n", i.to_string()),
            },
        ));
        valid.extend(encode(
            &mut enc,
            &Frame::Data {
                stream_id: 2 * i + 1,
                fin: i % 2 == 0,
                data: Bytes::from(vec![i as u8; 10]),
            },
        ));
        valid.extend(encode(&mut enc, &Frame::Ping { id: i }));
    }
    let mut outcomes = [0usize; 3];
    for round in 0..3000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let len = rng.below(300);
            let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias half of them towards plausible control frame headers.
            if len >= 8 && rng.below(2) == 0 {
                v[0] = 0x80;
                v[1] = 3;
                v[2] = 0;
                v[3] = (1 + rng.below(9)) as u8;
                v[5] = 0;
                v[6] = 0;
                v[7] = (len - 8).min(255) as u8;
            }
            v
        } else {
            let mut v = valid.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(v.len());
                v[at] ^= 1 << rng.below(8);
            }
            v.truncate(rng.below(v.len() + 1));
            v
        };
        let mut dec = FrameDecoder::new(limits);
        let mut buf = BytesMut::from(&input[..]);
        let outcome = loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(_)) => assert!(buf.len() < before, "a frame consumed nothing"),
                Ok(None) => {
                    assert_eq!(buf.len(), before);
                    break 0;
                }
                Err(_) => break 1,
            }
            if buf.is_empty() {
                break 2;
            }
        };
        outcomes[outcome] += 1;
    }
    // The corpus exercised all three ends.
    assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
}
