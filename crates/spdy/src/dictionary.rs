//! The preset zlib dictionary of SPDY/3 header blocks (SPDY protocol draft 3, section 2.6.10.1).
//!
//! The specification defines it as a list of words, each preceded by its length as a 32-bit
//! big-endian integer, followed by one string of common header values without length prefixes.
//! It is built from that description here; its size (1423 bytes) and Adler-32 checksum
//! (`0xe3c6a7c2`, the DICTID every SPDY/3 zlib stream carries in its header) are checked by the
//! tests, and a header block compressed by Go's spdystream decodes with it.

use std::sync::OnceLock;

/// The length-prefixed words, in the specification's order.
const WORDS: &[&str] = &[
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

/// The string of common values that ends the dictionary (no length prefixes, no separators
/// beyond the ones written here).
const TAIL: &str = concat!(
    "100101201202205206300302303304305306307",
    "402405406407408409410411412413414415416417",
    "502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
    " 00:00:00",
    " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,",
    "publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header dictionary, byte for byte.
pub(crate) fn header_dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut out = Vec::with_capacity(1423);
        for word in WORDS {
            let len = u32::try_from(word.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(word.as_bytes());
        }
        out.extend_from_slice(TAIL.as_bytes());
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression};

    #[test]
    fn size_and_checksum_match_the_specification() {
        let dict = header_dictionary();
        assert_eq!(dict.len(), 1423);
        // The zlib DICTID of every SPDY/3 header stream.
        let mut c = Compress::new(Compression::best(), true);
        let adler = c.set_dictionary(dict).expect("set_dictionary");
        assert_eq!(adler, 0xe3c6_a7c2);
        assert!(dict.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(dict.ends_with(b",*,enq=0."));
    }
}
