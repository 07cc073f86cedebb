//! SPDY/3.1 framing, as kubelet's streaming clients speak it (client-go's
//! `httpstream/spdy`, over `moby/spdystream`): data frames, and the control
//! frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY,
//! HEADERS and WINDOW_UPDATE. Header blocks are compressed with zlib and
//! SPDY's preset dictionary, one compression context per direction for the
//! whole connection (each block ends with a sync flush).
//!
//! Written here because no maintained Rust crate speaks SPDY any more (the
//! protocol was withdrawn in favour of HTTP/2, which kubelet's clients do
//! not use for these streams); the framing is small and fully specified by
//! the SPDY/3.1 draft.

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// The FIN flag of data and control frames: the sender is done.
pub const FLAG_FIN: u8 = 0x01;
/// Length of a frame's header.
pub const HEADER_LEN: usize = 8;
/// Longest frame payload the 24-bit length allows.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Longest header block accepted once decompressed.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// RST_STREAM status: the stream was refused or broke the protocol.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: the stream is cancelled.
pub const RST_CANCEL: u32 = 5;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// A stream's headers: lowercase names, several values of one name joined
/// with NUL, as SPDY carries them.
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (lowercase) in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        /// `(flags, id, value)`.
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame of a type this side does not know; ignored.
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy control frame of version {0}, not 3")]
    Version(u16),
    #[error("spdy {what} frame too short ({len} bytes)")]
    Short { what: &'static str, len: usize },
    #[error("spdy frame of {0} bytes is too long")]
    TooLong(usize),
    #[error("spdy header block: {0}")]
    HeaderBlock(String),
    #[error("spdy header compression: {0}")]
    Compression(String),
}

/// SPDY/3's zlib dictionary (draft 3, section 2.6.10.1): 65 names and
/// values each preceded by its length as a big-endian u32, then common
/// value fragments. 1423 bytes.
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: [&str; 65] = [
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "1001012012022052063003023033043053063074024054064074084094104114124134144154",
            "16417502504505203 Non-Authoritative Information204 No Content301 Moved Perma",
            "nently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal ",
            "Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Ju",
            "n Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTch",
            "unked,text/html,image/png,image/jpg,image/gif,application/xml,application/xh",
            "tml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcha",
            "rset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for word in WORDS {
            d.extend_from_slice(&(word.len() as u32).to_be_bytes());
            d.extend_from_slice(word.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What a frame's 8-byte header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    control: bool,
    /// The version (control) or the stream id (data).
    word: u32,
    kind: u16,
    pub flags: u8,
    pub len: usize,
}

/// Reads a frame header.
pub fn parse_head(b: &[u8; HEADER_LEN]) -> FrameHead {
    let first = u32_at(b, 0);
    let control = first & 0x8000_0000 != 0;
    let len = (u32_at(b, 4) & 0x00ff_ffff) as usize;
    FrameHead {
        control,
        word: if control {
            (first >> 16) & 0x7fff
        } else {
            first & 0x7fff_ffff
        },
        kind: (first & 0xffff) as u16,
        flags: b[4],
        len,
    }
}

/// One side of a connection's framing: the two header compression
/// contexts.
pub struct Codec {
    compress: Compress,
    decompress: Decompress,
    /// Whether the decompressor has been given the dictionary.
    dictionary_set: bool,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    pub fn new() -> Codec {
        let mut compress = Compress::new(Compression::best(), true);
        // A fresh deflate stream takes a dictionary; this cannot fail.
        let _ = compress.set_dictionary(dictionary());
        Codec {
            compress,
            decompress: Decompress::new(true),
            dictionary_set: false,
        }
    }

    /// Decodes one frame from its header and payload.
    pub fn decode(&mut self, head: FrameHead, payload: &[u8]) -> Result<Frame, SpdyError> {
        if !head.control {
            return Ok(Frame::Data {
                stream_id: head.word,
                fin: head.flags & FLAG_FIN != 0,
                data: payload.to_vec(),
            });
        }
        if head.word != u32::from(VERSION) {
            return Err(SpdyError::Version(head.word as u16));
        }
        let need = |what: &'static str, n: usize| {
            if payload.len() < n {
                Err(SpdyError::Short {
                    what,
                    len: payload.len(),
                })
            } else {
                Ok(())
            }
        };
        let id = |at: usize| u32_at(payload, at) & 0x7fff_ffff;
        let fin = head.flags & FLAG_FIN != 0;
        Ok(match head.kind {
            TYPE_SYN_STREAM => {
                need("SYN_STREAM", 10)?;
                Frame::SynStream {
                    stream_id: id(0),
                    associated_to: id(4),
                    priority: payload[8] >> 5,
                    flags: head.flags,
                    headers: self.read_headers(&payload[10..])?,
                }
            }
            TYPE_SYN_REPLY => {
                need("SYN_REPLY", 4)?;
                Frame::SynReply {
                    stream_id: id(0),
                    fin,
                    headers: self.read_headers(&payload[4..])?,
                }
            }
            TYPE_HEADERS => {
                need("HEADERS", 4)?;
                Frame::Headers {
                    stream_id: id(0),
                    fin,
                    headers: self.read_headers(&payload[4..])?,
                }
            }
            TYPE_RST_STREAM => {
                need("RST_STREAM", 8)?;
                Frame::RstStream {
                    stream_id: id(0),
                    status: u32_at(payload, 4),
                }
            }
            TYPE_SETTINGS => {
                need("SETTINGS", 4)?;
                let n = u32_at(payload, 0) as usize;
                need("SETTINGS", n.saturating_mul(8).saturating_add(4))?;
                let entries = (0..n)
                    .map(|i| {
                        let at = 4 + i * 8;
                        let word = u32_at(payload, at);
                        (
                            (word >> 24) as u8,
                            word & 0x00ff_ffff,
                            u32_at(payload, at + 4),
                        )
                    })
                    .collect();
                Frame::Settings { entries }
            }
            TYPE_PING => {
                need("PING", 4)?;
                Frame::Ping {
                    id: u32_at(payload, 0),
                }
            }
            TYPE_GOAWAY => {
                need("GOAWAY", 8)?;
                Frame::GoAway {
                    last_good_stream_id: id(0),
                    status: u32_at(payload, 4),
                }
            }
            TYPE_WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate {
                    stream_id: id(0),
                    delta: u32_at(payload, 4) & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        })
    }

    /// Appends `frame`, encoded, to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let mut payload = Vec::new();
        let (kind, flags) = match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(SpdyError::TooLong(data.len()));
                }
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                let word = (u32::from(flag(*fin)) << 24) | data.len() as u32;
                out.extend_from_slice(&word.to_be_bytes());
                out.extend_from_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                payload.extend_from_slice(&stream_id.to_be_bytes());
                payload.extend_from_slice(&associated_to.to_be_bytes());
                payload.push((priority & 0x7) << 5);
                payload.push(0);
                self.write_headers(headers, &mut payload)?;
                (TYPE_SYN_STREAM, *flags)
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                payload.extend_from_slice(&stream_id.to_be_bytes());
                self.write_headers(headers, &mut payload)?;
                (TYPE_SYN_REPLY, flag(*fin))
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                payload.extend_from_slice(&stream_id.to_be_bytes());
                self.write_headers(headers, &mut payload)?;
                (TYPE_HEADERS, flag(*fin))
            }
            Frame::RstStream { stream_id, status } => {
                payload.extend_from_slice(&stream_id.to_be_bytes());
                payload.extend_from_slice(&status.to_be_bytes());
                (TYPE_RST_STREAM, 0)
            }
            Frame::Settings { entries } => {
                payload.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (flags, id, value) in entries {
                    let word = (u32::from(*flags) << 24) | (id & 0x00ff_ffff);
                    payload.extend_from_slice(&word.to_be_bytes());
                    payload.extend_from_slice(&value.to_be_bytes());
                }
                (TYPE_SETTINGS, 0)
            }
            Frame::Ping { id } => {
                payload.extend_from_slice(&id.to_be_bytes());
                (TYPE_PING, 0)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                payload.extend_from_slice(&last_good_stream_id.to_be_bytes());
                payload.extend_from_slice(&status.to_be_bytes());
                (TYPE_GOAWAY, 0)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                payload.extend_from_slice(&stream_id.to_be_bytes());
                payload.extend_from_slice(&delta.to_be_bytes());
                (TYPE_WINDOW_UPDATE, 0)
            }
            Frame::Unknown { kind } => (*kind, 0),
        };
        if payload.len() > MAX_PAYLOAD {
            return Err(SpdyError::TooLong(payload.len()));
        }
        let first = 0x8000_0000 | (u32::from(VERSION) << 16) | u32::from(kind);
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        Ok(())
    }

    /// Compresses a header block onto `out`.
    fn write_headers(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        let start = self.compress.total_in();
        let mut block = Vec::with_capacity(raw.len() + 64);
        loop {
            let done = (self.compress.total_in() - start) as usize;
            self.compress
                .compress_vec(&raw[done..], &mut block, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let done = (self.compress.total_in() - start) as usize;
            // The flush is complete once the input is in and the output
            // did not fill the space it had.
            if done == raw.len() && block.len() < block.capacity() {
                break;
            }
            block.reserve(block.capacity().max(256));
        }
        out.extend_from_slice(&block);
        Ok(())
    }

    /// Decompresses and parses a header block.
    fn read_headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let bad = |m: &str| SpdyError::HeaderBlock(m.to_string());
        let start = self.decompress.total_in();
        let mut raw = Vec::with_capacity(block.len() * 4 + 64);
        loop {
            let done = (self.decompress.total_in() - start) as usize;
            match self
                .decompress
                .decompress_vec(&block[done..], &mut raw, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() && !self.dictionary_set => {
                    self.decompress
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                    self.dictionary_set = true;
                    continue;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
            let done = (self.decompress.total_in() - start) as usize;
            if done == block.len() && raw.len() < raw.capacity() {
                break;
            }
            if raw.len() > MAX_HEADER_BLOCK {
                return Err(bad("more than 1 MiB of headers"));
            }
            raw.reserve(raw.capacity().max(256));
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], SpdyError> {
            let end = at.checked_add(n).filter(|&e| e <= raw.len());
            let end = end.ok_or_else(|| bad("truncated"))?;
            let s = &raw[at..end];
            at = end;
            Ok(s)
        };
        let count = u32_at(take(4)?, 0) as usize;
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let n = u32_at(take(4)?, 0) as usize;
            let name = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad("name not UTF-8"))?;
            let n = u32_at(take(4)?, 0) as usize;
            let value = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad("value not UTF-8"))?;
            headers.push((name.to_ascii_lowercase(), value));
        }
        Ok(headers)
    }
}

fn flag(fin: bool) -> u8 {
    if fin {
        FLAG_FIN
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let (mut tx, mut rx) = (Codec::new(), Codec::new());
        let mut wire = Vec::new();
        for f in frames {
            tx.encode(f, &mut wire).unwrap();
        }
        let mut out = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let head: [u8; HEADER_LEN] = wire[at..at + HEADER_LEN].try_into().unwrap();
            let head = parse_head(&head);
            let payload = &wire[at + HEADER_LEN..at + HEADER_LEN + head.len];
            out.push(rx.decode(head, payload).unwrap());
            at += HEADER_LEN + head.len;
        }
        out
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"utf-,*,enq=0."));
        // Its Adler-32, which a zlib stream with a preset dictionary names.
        let mut c = Compress::new(Compression::best(), true);
        assert_eq!(c.set_dictionary(d).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip_with_one_compression_context() {
        let headers = |t: &str| vec![("streamtype".to_string(), t.to_string())];
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers("error"),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 2,
                flags: FLAG_FIN,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("port".into(), "80".into()),
                    ("requestid".into(), "0".into()),
                ],
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Vec::new(),
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream_id: 7,
                fin: false,
                data: vec![0xAB; 70_000],
            },
            Frame::Ping { id: 1 },
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                entries: vec![(0, 7, 65536), (1, 4, 100)],
            },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 4096,
            },
            Frame::Headers {
                stream_id: 1,
                fin: true,
                headers: headers("stdout"),
            },
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn wire_layout_matches_the_draft() {
        let mut c = Codec::new();
        let mut wire = Vec::new();
        c.encode(&Frame::Ping { id: 7 }, &mut wire).unwrap();
        assert_eq!(wire, [0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 7]);
        wire.clear();
        c.encode(
            &Frame::Data {
                stream_id: 5,
                fin: true,
                data: b"ab".to_vec(),
            },
            &mut wire,
        )
        .unwrap();
        assert_eq!(wire, [0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
        // A header block is a zlib stream that names the dictionary: FDICT
        // set, and the dictionary's Adler-32 after the two header bytes.
        wire.clear();
        c.encode(
            &Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Vec::new(),
            },
            &mut wire,
        )
        .unwrap();
        let block = &wire[12..];
        assert_eq!(block[1] & 0x20, 0x20, "FDICT");
        assert_eq!(&block[2..6], &0xe3c6_a7c2u32.to_be_bytes());
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut c = Codec::new();
        let head = parse_head(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4]);
        assert!(matches!(
            c.decode(head, &[0, 0, 0, 1]),
            Err(SpdyError::Version(2))
        ));
        let head = parse_head(&[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 2]);
        assert!(matches!(
            c.decode(head, &[0, 0]),
            Err(SpdyError::Short { .. })
        ));
        let head = parse_head(&[0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8]);
        assert!(c.decode(head, &[0, 0, 0, 1, 1, 2, 3, 4]).is_err());
        let head = parse_head(&[0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 0]);
        assert_eq!(c.decode(head, &[]).unwrap(), Frame::Unknown { kind: 10 });
    }

    #[test]
    fn headers_are_found_by_lowercase_name() {
        let h = vec![("streamtype".to_string(), "stdin".to_string())];
        assert_eq!(header(&h, "streamType"), Some("stdin"));
        assert_eq!(header(&h, "port"), None);
    }
}
