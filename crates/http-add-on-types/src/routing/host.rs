//! Host normalisation, shared by table construction and lookups so both sides agree.

/// Longest DNS name; longer request hosts match only the catch-all tier.
pub(super) const MAX_HOST_LEN: usize = 253;

/// Removes a `:port` suffix, the brackets of an IPv6 literal and one trailing dot.
///
/// `example.com:8080` → `example.com`, `[::1]:8080` → `::1`, `::1` → `::1` (a bare IPv6
/// address has several colons and no port), `example.com.` → `example.com`. Case is untouched.
pub(super) fn strip_host(host: &str) -> &str {
    let host = if let Some(rest) = host.strip_prefix('[') {
        match rest.find(']') {
            Some(end) => &rest[..end],
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(colon) if !host[..colon].contains(':') => &host[..colon],
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Normalises a request host into `buf` (lower case); `None` when it is longer than
/// [`MAX_HOST_LEN`]. Never allocates.
pub(super) fn normalize_into<'b>(host: &str, buf: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b [u8]> {
    let host = strip_host(host).as_bytes();
    let out = buf.get_mut(..host.len())?;
    for (dst, src) in out.iter_mut().zip(host) {
        *dst = src.to_ascii_lowercase();
    }
    Some(out)
}

/// What a host written in a route means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostPattern {
    /// Matches this normalised host only.
    Exact(Box<[u8]>),
    /// `*.suffix`: matches any host ending in `.suffix` (holds the normalised suffix).
    Wildcard(Box<[u8]>),
    /// `*` or empty: matches every host.
    CatchAll,
    /// Longer than a DNS name can be: matches nothing.
    TooLong,
}

impl HostPattern {
    /// Classifies a host from a route.
    pub(super) fn parse(host: &str) -> Self {
        let lower = strip_host(host).to_ascii_lowercase().into_bytes();
        if lower.is_empty() || lower == b"*" {
            Self::CatchAll
        } else if lower.len() > MAX_HOST_LEN {
            Self::TooLong
        } else if let Some(suffix) = lower.strip_prefix(b"*.") {
            Self::Wildcard(suffix.into())
        } else {
            Self::Exact(lower.into())
        }
    }

    /// The canonical text of the pattern (`*` for the catch-all), for conflict reports.
    pub(super) fn canonical(&self) -> String {
        match self {
            Self::Exact(host) => String::from_utf8_lossy(host).into_owned(),
            Self::Wildcard(suffix) => format!("*.{}", String::from_utf8_lossy(suffix)),
            Self::CatchAll => "*".to_owned(),
            Self::TooLong => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(host: &str) -> Option<String> {
        let mut buf = [0; MAX_HOST_LEN];
        normalize_into(host, &mut buf).map(|h| String::from_utf8(h.to_vec()).unwrap())
    }

    #[test]
    fn strips_port_dot_and_case() {
        assert_eq!(norm("Example.COM:8080").as_deref(), Some("example.com"));
        assert_eq!(norm("example.com.").as_deref(), Some("example.com"));
        assert_eq!(norm("example.com.:80").as_deref(), Some("example.com"));
        assert_eq!(norm("example.com").as_deref(), Some("example.com"));
        assert_eq!(norm("").as_deref(), Some(""));
    }

    #[test]
    fn ipv6_literals() {
        assert_eq!(norm("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(norm("[::1]").as_deref(), Some("::1"));
        assert_eq!(norm("::1").as_deref(), Some("::1"));
        assert_eq!(norm("[FE80::1]:443").as_deref(), Some("fe80::1"));
        // Unterminated bracket: left as is, never panics.
        assert_eq!(norm("[::1").as_deref(), Some("[::1"));
    }

    #[test]
    fn too_long_hosts() {
        let long = "a".repeat(MAX_HOST_LEN + 1);
        assert_eq!(norm(&long), None);
        assert_eq!(norm(&long[1..]).map(|h| h.len()), Some(MAX_HOST_LEN));
        assert_eq!(HostPattern::parse(&long), HostPattern::TooLong);
    }

    #[test]
    fn patterns() {
        assert_eq!(HostPattern::parse("*"), HostPattern::CatchAll);
        assert_eq!(HostPattern::parse(""), HostPattern::CatchAll);
        assert_eq!(
            HostPattern::parse("*.Example.com"),
            HostPattern::Wildcard(b"example.com".as_slice().into())
        );
        assert_eq!(
            HostPattern::parse("[::1]"),
            HostPattern::Exact(b"::1".as_slice().into())
        );
        assert_eq!(
            HostPattern::parse("*.Example.com").canonical(),
            "*.example.com"
        );
    }
}
