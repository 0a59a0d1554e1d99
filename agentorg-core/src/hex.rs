//! Lowercase hex of bytes: the hashes in ids, names and dead letters.

/// The first `len` lowercase hex digits of `bytes` (two per byte).
pub(crate) fn hex(bytes: &[u8], len: usize) -> String {
    bytes
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(len)
        .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
        .collect()
}

/// 32 hex digits of the SHA-256 of `parts`, each ended by a 0 byte: a
/// stable id derived from them (an idempotency key's event, a keyed saga
/// run).
pub(crate) fn digest(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize(), 32)
}

#[cfg(test)]
mod tests {
    use super::hex;

    /// The same digits as `format!("{b:02x}")` per byte, cut at `len`.
    #[test]
    fn as_format_writes_it() {
        let bytes = [0x00, 0x0f, 0xa5, 0xff, 0x10];
        let formatted: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&bytes, 10), formatted);
        assert_eq!(hex(&bytes, 4), &formatted[..4]);
        assert_eq!(hex(&bytes, 99), formatted);
    }
}
