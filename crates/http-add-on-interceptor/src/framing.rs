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
    /// Whitespace or an extension after the size, up to the line end.
    SizeRest,
    /// Saw CR after the size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw CR of the final empty line.
    TrailerEndLf,
    /// The body is complete.
    Done,
}

/// Follows a chunked body through its chunk sizes, data and trailers to the final empty line.
#[derive(Debug, Default)]
pub(crate) struct ChunkedScanner {
    state: State,
    /// Chunk size being parsed, then bytes of chunk data left.
    size: u64,
    digits: u8,
}

impl ChunkedScanner {
    /// Scans the next bytes; `End(n)` when the body ends after `n` of them.
    pub(crate) fn scan(&mut self, data: &[u8]) -> Result<Fed, MalformedChunk> {
        let mut i = 0;
        while i < data.len() {
            if self.state == State::Data {
                let take = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - i);
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = data[i];
            i += 1;
            self.state = match (self.state, byte) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits >= 15 {
                        return Err(MalformedChunk);
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex_value(b));
                    State::Size
                }
                (State::Size, b';' | b' ' | b'\t') if self.digits > 0 => State::SizeRest,
                (State::Size, b'\r') if self.digits > 0 => State::SizeLf,
                (State::Size, b'\n') if self.digits > 0 => self.after_size_line(),
                (State::SizeRest, b'\r') => State::SizeLf,
                (State::SizeRest, b'\n') | (State::SizeLf, b'\n') => self.after_size_line(),
                (State::SizeRest, _) => State::SizeRest,
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataCr, b'\n') | (State::DataLf, b'\n') => {
                    self.digits = 0;
                    State::Size
                }
                (State::TrailerStart, b'\r') => State::TrailerEndLf,
                (State::TrailerStart, b'\n') | (State::TrailerEndLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(Fed::End(i));
                }
                (State::TrailerLine, b'\n') => State::TrailerStart,
                (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
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

    fn after_size_line(&mut self) -> State {
        if self.size == 0 {
            State::TrailerStart
        } else {
            State::Data
        }
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
    }
}
