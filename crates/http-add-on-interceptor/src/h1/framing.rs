//! Where an HTTP/1.1 message body ends, for bodies relayed byte for byte (the fast path never
//! re-encodes a body, so it only needs to know when the message is over).

/// A body's framing, as declared by its message head (RFC 9112 §6.3).
#[derive(Debug)]
pub(crate) enum Framing {
    /// No body (HEAD responses, 1xx, 204, 304, or a declared length of zero).
    Empty,
    /// `Content-Length`: this many bytes are left.
    Length(u64),
    /// `Transfer-Encoding: chunked`, relayed verbatim.
    Chunked(ChunkedScanner),
    /// Neither: the body ends when the sender closes the connection.
    UntilClose,
}

/// What feeding bytes to a [`Framing`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fed {
    /// Every byte belongs to the body and more are expected.
    More,
    /// The body ends after this many of the bytes fed.
    End(usize),
}

/// The chunked encoding was malformed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MalformedChunk;

impl Framing {
    /// Accounts for `data`, the next bytes of the body.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Fed, MalformedChunk> {
        match self {
            Self::Empty => Ok(Fed::End(0)),
            Self::Length(left) => {
                let len = data.len() as u64;
                if len >= *left {
                    let end = usize::try_from(*left).unwrap_or(data.len());
                    *left = 0;
                    Ok(Fed::End(end))
                } else {
                    *left -= len;
                    Ok(Fed::More)
                }
            }
            Self::Chunked(scanner) => scanner.scan(data),
            Self::UntilClose => Ok(Fed::More),
        }
    }

    /// Whether the body is complete without further bytes.
    pub(crate) fn is_done(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Length(left) => *left == 0,
            Self::Chunked(scanner) => scanner.state == State::Done,
            Self::UntilClose => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Reading the hex chunk size (`digits` so far).
    #[default]
    Size,
    /// Whitespace after the size (`BWS` before an extension or the line end).
    SizeWs,
    /// Inside chunk extensions, up to the CR of the size line.
    Ext,
    /// Saw CR of the size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// Saw CR of a trailer line.
    TrailerLf,
    /// Saw CR of the final empty line.
    TrailerEndLf,
    /// The body is complete.
    Done,
}

/// Most bytes of chunk extensions, and of trailers, accepted in one body.
const MAX_EXTRA_BYTES: u32 = 16 * 1024;

/// Follows a chunked body through its chunk sizes, extensions, data and trailers to the final
/// empty line, strictly by RFC 9112 §7.1: CRLF line ends only, hex sizes with nothing but
/// whitespace before an extension, extensions and trailer fields without control characters.
#[derive(Debug, Default)]
pub(crate) struct ChunkedScanner {
    state: State,
    /// Chunk size being parsed, then bytes of chunk data left.
    size: u64,
    digits: u8,
    /// Bytes of chunk extensions and trailers seen (bounded by [`MAX_EXTRA_BYTES`]).
    extra: u32,
    /// Chunk data bytes seen (the decoded body's length).
    data_len: u64,
}

/// `tchar` of RFC 9110 §5.6.2: the bytes of a token (a field name, a chunk extension name).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte allowed inside a field value or chunk extension: visible ASCII, space, tab and
/// `obs-text` (RFC 9110 §5.5), but no other control character.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

impl ChunkedScanner {
    /// Chunk data bytes seen so far (the length of the decoded body).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Scans the next bytes; `End(n)` when the body ends after `n` of them.
    pub(crate) fn scan(&mut self, data: &[u8]) -> Result<Fed, MalformedChunk> {
        self.scan_with(data, |_, _| {})
    }

    /// Scans as [`ChunkedScanner::scan`] does, handing the position and length of every run
    /// of chunk data in `data` to `on_data` (to decode the body).
    pub(crate) fn scan_with(
        &mut self,
        data: &[u8],
        mut on_data: impl FnMut(usize, usize),
    ) -> Result<Fed, MalformedChunk> {
        let mut i = 0;
        while i < data.len() {
            if self.state == State::Data {
                let take = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - i);
                on_data(i, take);
                i += take;
                self.size -= take as u64;
                self.data_len += take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = data[i];
            i += 1;
            if matches!(
                self.state,
                State::Ext | State::TrailerName | State::TrailerValue
            ) {
                self.extra += 1;
                if self.extra > MAX_EXTRA_BYTES {
                    return Err(MalformedChunk);
                }
            }
            self.state = match (self.state, byte) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits >= 15 {
                        return Err(MalformedChunk);
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex_value(b));
                    State::Size
                }
                (State::Size, b' ' | b'\t') if self.digits > 0 => State::SizeWs,
                (State::SizeWs, b' ' | b'\t') => State::SizeWs,
                (State::Size | State::SizeWs, b';') if self.digits > 0 => State::Ext,
                (State::Size | State::SizeWs | State::Ext, b'\r') if self.digits > 0 => {
                    State::SizeLf
                }
                (State::Ext, b) if is_value_byte(b) => State::Ext,
                (State::SizeLf, b'\n') => {
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.digits = 0;
                    State::Size
                }
                (State::TrailerStart, b'\r') => State::TrailerEndLf,
                (State::TrailerStart | State::TrailerName, b) if is_tchar(b) => State::TrailerName,
                (State::TrailerName, b':') => State::TrailerValue,
                (State::TrailerValue, b'\r') => State::TrailerLf,
                (State::TrailerValue, b) if is_value_byte(b) => State::TrailerValue,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::TrailerEndLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(Fed::End(i));
                }
                (State::Done, _) => return Ok(Fed::End(i - 1)),
                _ => return Err(MalformedChunk),
            };
        }
        Ok(if self.state == State::Done {
            Fed::End(0)
        } else {
            Fed::More
        })
    }
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        _ => byte - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Scans `body` fed in pieces cut at `cuts`; the offset of the end within `body`.
    fn end_of(body: &[u8], cuts: &[usize]) -> Result<Option<usize>, MalformedChunk> {
        let mut scanner = ChunkedScanner::default();
        let mut offset = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        points.push(body.len());
        points.sort_unstable();
        for point in points {
            if point < offset {
                continue;
            }
            match scanner.scan(&body[offset..point])? {
                Fed::End(n) => return Ok(Some(offset + n)),
                Fed::More => offset = point,
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_of_chunked_bodies() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET / HTTP/1.1";
        assert_eq!(end_of(body, &[]), Ok(Some(body.len() - 14)));
        let trailers = b"3\r\nabc\r\n0\r\nx-t: 1\r\nx-u: 2\r\n\r\n";
        assert_eq!(end_of(trailers, &[]), Ok(Some(trailers.len())));
        assert_eq!(end_of(b"A\r\n0123456789\r\n0\r\n\r\n", &[]), Ok(Some(20)));
        assert_eq!(end_of(b"5\r\nhel", &[]), Ok(None));
    }

    #[test]
    fn rejects_malformed_chunks() {
        assert_eq!(end_of(b"zz\r\n", &[]), Err(MalformedChunk));
        assert_eq!(end_of(b"\r\n", &[]), Err(MalformedChunk));
        assert_eq!(end_of(b"3\r\nabcX\r\n", &[]), Err(MalformedChunk));
        assert_eq!(end_of(b"ffffffffffffffff1\r\n", &[]), Err(MalformedChunk));
    }

    /// Each lenient framing that a backend parser might read differently is refused.
    #[test]
    fn refuses_lenient_chunked_framing() {
        for body in [
            &b"3\nabc\r\n0\r\n\r\n"[..],     // bare LF after the size
            b"3\r\nabc\n0\r\n\r\n",          // bare LF after the data
            b"3;a=b\nc\r\nabc\r\n0\r\n\r\n", // LF inside an extension
            b"3 3\r\nabc\r\n0\r\n\r\n",      // junk after the size
            b"0x3\r\nabc\r\n0\r\n\r\n",      // a prefix
            b"+3\r\nabc\r\n0\r\n\r\n",       // a sign
            b"0\n\n",                        // bare LFs at the end
            b"0\r\n\n",                      // bare LF for the final line
            b"0\r\nx-t: a\rb\r\n\r\n",       // bare CR in a trailer
            b"0\r\nx-t a\r\n\r\n",           // a trailer without a colon
            b"0\r\n x-t: a\r\n\r\n",         // obs-fold in trailers
            b"3;\x00\r\nabc\r\n0\r\n\r\n",   // NUL in an extension
            b"3\r\nabcd\r\n0\r\n\r\n",       // data longer than its size
            b";x\r\n",                       // no size at all
        ] {
            assert_eq!(
                end_of(body, &[]),
                Err(MalformedChunk),
                "{}",
                String::from_utf8_lossy(body).escape_debug()
            );
        }
        let huge_ext = [b"1;".as_slice(), &[b'x'; 17 * 1024], b"\r\n"].concat();
        assert_eq!(end_of(&huge_ext, &[]), Err(MalformedChunk));
    }

    #[test]
    fn accepts_strict_extensions_and_trailers() {
        let body = b"3 ;a=b;c=\"d e\"\r\nabc\r\n0\r\nx-sum: 12\r\nx-empty:\r\n\r\n";
        let mut scanner = ChunkedScanner::default();
        assert_eq!(scanner.scan(body), Ok(Fed::End(body.len())));
        assert_eq!(scanner.data_len(), 3);
    }

    #[test]
    fn content_length_ends_exactly() {
        let mut framing = Framing::Length(5);
        assert_eq!(framing.feed(b"abc"), Ok(Fed::More));
        assert!(!framing.is_done());
        assert_eq!(framing.feed(b"deXYZ"), Ok(Fed::End(2)));
        assert!(framing.is_done());
        assert_eq!(Framing::Empty.feed(b"x"), Ok(Fed::End(0)));
        assert_eq!(Framing::UntilClose.feed(b"x"), Ok(Fed::More));
    }

    proptest! {
        #[test]
        fn any_split_finds_the_same_end(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            cuts in proptest::collection::vec(0usize..400, 0..8),
            upper in any::<bool>(),
        ) {
            let mut body = Vec::new();
            for chunk in &chunks {
                let size = if upper { format!("{:X}", chunk.len()) } else { format!("{:x}", chunk.len()) };
                body.extend_from_slice(size.as_bytes());
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let end = body.len();
            body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            prop_assert_eq!(end_of(&body, &cuts), Ok(Some(end)));
        }

        #[test]
        fn any_split_decodes_the_same_data(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let mut body = Vec::new();
            for chunk in &chunks {
                body.extend_from_slice(format!("{:x};x=y\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\nT: v\r\n\r\n");
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < body.len()).collect();
            cuts.sort_unstable();
            cuts.push(body.len());
            let mut scanner = ChunkedScanner::default();
            let mut decoded = Vec::new();
            let mut from = 0;
            for cut in cuts {
                let piece = &body[from..cut];
                scanner
                    .scan_with(piece, |at, len| decoded.extend_from_slice(&piece[at..at + len]))
                    .map_err(|_| TestCaseError::fail("malformed"))?;
                from = cut;
            }
            prop_assert_eq!(decoded, chunks.concat());
            prop_assert_eq!(scanner.data_len(), chunks.concat().len() as u64);
        }
    }
}
