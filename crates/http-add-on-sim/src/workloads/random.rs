//! Small random choices: pod name suffixes, pod IPs and the pod-template hash.
//!
//! Randomness comes from std's per-instance random hasher keys, which is plenty for names and
//! loopback addresses and avoids a dependency.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The alphabet Kubernetes uses for generated names (no vowels, no look-alike characters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Returns 64 random bits.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A random suffix of `len` characters from the Kubernetes name alphabet (like `generateName`).
pub(crate) fn name_suffix(len: usize) -> String {
    (0..len)
        .map(|_| SAFE_ALPHABET[(random_u64() % SAFE_ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// A random pod IP in 127.64.0.0/10, never ending in .0 or .255.
pub(crate) fn pod_ip() -> Ipv4Addr {
    loop {
        let host = (random_u64() as u32) & 0x003f_ffff;
        let ip = Ipv4Addr::from(0x7f40_0000 | host);
        let last = ip.octets()[3];
        if last != 0 && last != 255 {
            return ip;
        }
    }
}

/// 32-bit FNV-1a, the hash Kubernetes uses for `pod-template-hash`.
pub(crate) fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// Encodes a number like Kubernetes' `rand.SafeEncodeString(fmt.Sprint(hash))`.
pub(crate) fn safe_encode(value: u32) -> String {
    value
        .to_string()
        .bytes()
        .map(|digit| SAFE_ALPHABET[usize::from(digit) % SAFE_ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_stay_in_range() {
        for _ in 0..1000 {
            let ip = pod_ip();
            let [a, b, _, d] = ip.octets();
            assert_eq!(a, 127);
            assert!((64..128).contains(&b), "{ip}");
            assert!(d != 0 && d != 255, "{ip}");
        }
    }

    #[test]
    fn suffixes_use_the_safe_alphabet() {
        let suffix = name_suffix(5);
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_ne!(name_suffix(10), name_suffix(10));
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(safe_encode(0), "4");
    }
}
