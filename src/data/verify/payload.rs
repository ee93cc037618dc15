//! Equal unordered collections whose DUMP payloads differ only in the order of their members: a
//! hashtable-encoded set or hash dumps its members in its own table's order, which differs between two
//! processes (each seeds its hash function at random) even when they hold the same value. On Redis 7.0
//! that is every set with a member that is not an integer: about a quarter of the non-string keys of a
//! typical keyspace, which the bulk lane used to hand to the typed comparison, three more round trips
//! per side on the redis crate's connections.
//!
//! Here the two payloads are read as what they are, a count and that many elements (pairs for a hash),
//! and compared as multisets of the elements' encoded bytes. Equal encodings are equal strings (an
//! encoding decodes to one string: raw bytes, an integer, or LZF-compressed bytes and their length), so
//! equal multisets are equal values. The converse does not hold (one string can be encoded two ways):
//! a payload that is not one of these two types, that does not parse to its last byte, or whose
//! elements do not match, is left to the typed comparison, which has the last word.

/// `RDB_TYPE_SET` and `RDB_TYPE_HASH`: the hashtable encodings (the listpack and intset ones dump in
/// insertion or sorted order, and their bodies are compared as they are).
const RDB_TYPE_SET: u8 = 2;
const RDB_TYPE_HASH: u8 = 4;

/// Whether two DUMP bodies (payloads without their 10-byte trailer) are the same hashtable-encoded set,
/// or the same hashtable-encoded hash, in any member order. `false` means "not shown equal here".
pub(super) fn same_members(a: &[u8], b: &[u8]) -> bool {
    match (members(a), members(b)) {
        (Some((ka, mut a)), Some((kb, mut b))) if ka == kb && a.len() == b.len() => {
            a.sort_unstable();
            b.sort_unstable();
            a == b
        }
        _ => false,
    }
}

/// A set's member (and nothing) or a hash's field and value, each as its encoding.
type Element<'a> = (&'a [u8], &'a [u8]);

/// The type of a hashtable set or hash payload body, and its elements; `None` if the body is not one,
/// or does not parse exactly.
fn members(body: &[u8]) -> Option<(u8, Vec<Element<'_>>)> {
    let (&kind, rest) = body.split_first()?;
    if kind != RDB_TYPE_SET && kind != RDB_TYPE_HASH {
        return None;
    }
    let mut r = Reader { buf: rest, pos: 0 };
    let count = usize::try_from(r.len()?).ok()?;
    // Each element takes at least one byte: a count beyond the bytes left is not a payload.
    if count > rest.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let first = r.string()?;
        let second = if kind == RDB_TYPE_HASH {
            r.string()?
        } else {
            &[][..]
        };
        out.push((first, second));
    }
    (r.pos == r.buf.len()).then_some((kind, out))
}

/// A cursor over RDB-encoded lengths and strings.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// An RDB length: 6 bits, 14 bits, or a 32- or 64-bit big-endian number after a marker byte.
    /// The special string encodings (top bits 11) are not lengths.
    fn len(&mut self) -> Option<u64> {
        let first = self.byte()?;
        match first >> 6 {
            0 => Some(u64::from(first & 0x3f)),
            1 => Some((u64::from(first & 0x3f) << 8) | u64::from(self.byte()?)),
            2 if first == 0x80 => Some(u64::from(u32::from_be_bytes(
                self.take(4)?.try_into().ok()?,
            ))),
            2 if first == 0x81 => Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?)),
            _ => None,
        }
    }

    /// One RDB string, as its whole encoding (length prefix or encoding marker included): raw bytes
    /// after a length, an 8-, 16- or 32-bit integer, or LZF-compressed bytes after their compressed and
    /// uncompressed lengths.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let first = *self.buf.get(self.pos)?;
        if first >> 6 == 3 {
            self.pos += 1;
            match first & 0x3f {
                0 => self.take(1)?,
                1 => self.take(2)?,
                2 => self.take(4)?,
                3 => {
                    let compressed = usize::try_from(self.len()?).ok()?;
                    self.len()?;
                    self.take(compressed)?
                }
                _ => return None,
            };
        } else {
            let n = usize::try_from(self.len()?).ok()?;
            self.take(n)?;
        }
        Some(&self.buf[start..self.pos])
    }
}

#[cfg(test)]
mod tests {
    use super::same_members;

    /// A set body: type 2, a 6-bit count, then each member as a 6-bit length and its bytes.
    fn set(members: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![2, members.len() as u8];
        for m in members {
            out.push(m.len() as u8);
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn sets_in_any_order_are_equal_and_different_members_are_not() {
        let a = set(&[b"alpha", b"beta", b"gamma"]);
        assert!(same_members(&a, &set(&[b"gamma", b"alpha", b"beta"])));
        assert!(!same_members(&a, &set(&[b"gamma", b"alpha", b"delta"])));
        assert!(!same_members(&a, &set(&[b"gamma", b"alpha"])));
        // A member repeated is not the same multiset.
        assert!(!same_members(
            &set(&[b"a", b"a", b"b"]),
            &set(&[b"a", b"b", b"b"])
        ));
    }

    #[test]
    fn hashes_compare_fields_with_their_values() {
        let hash = |pairs: &[(&[u8], &[u8])]| {
            let mut out = vec![4, pairs.len() as u8];
            for (f, v) in pairs {
                out.push(f.len() as u8);
                out.extend_from_slice(f);
                out.push(v.len() as u8);
                out.extend_from_slice(v);
            }
            out
        };
        let a = hash(&[(b"f1", b"x"), (b"f2", b"y")]);
        assert!(same_members(&a, &hash(&[(b"f2", b"y"), (b"f1", b"x")])));
        // The same strings, paired otherwise.
        assert!(!same_members(&a, &hash(&[(b"f1", b"y"), (b"f2", b"x")])));
        // A set of the same bytes is not a hash.
        assert!(!same_members(&set(&[b"f1", b"x"]), &hash(&[(b"f1", b"x")])));
    }

    #[test]
    fn every_string_encoding_is_read_to_its_end() {
        // A 14-bit length, an 8-bit and a 32-bit integer, an LZF string (compressed 3, raw 5 bytes).
        let long = vec![b'z'; 100];
        let mut a = vec![2, 4, 0x40, 100];
        a.extend_from_slice(&long);
        a.extend_from_slice(&[0xc0, 7, 0xc2, 1, 2, 3, 4, 0xc3, 3, 5, 9, 9, 9]);
        let mut b = vec![
            2, 4, 0xc3, 3, 5, 9, 9, 9, 0xc2, 1, 2, 3, 4, 0xc0, 7, 0x40, 100,
        ];
        b.extend_from_slice(&long);
        assert!(same_members(&a, &b));
        // One byte short, or one too many: not a payload.
        assert!(!same_members(&a[..a.len() - 1], &b[..b.len() - 1]));
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2.push(0);
        b2.push(0);
        assert!(!same_members(&a2, &b2));
    }

    #[test]
    fn other_types_and_garbage_are_left_to_the_typed_comparison() {
        // A list (type 18), equal bytes: not shown equal here (the bulk lane compares bodies itself).
        assert!(!same_members(&[18, 1, 1, b'a'], &[18, 1, 1, b'a']));
        assert!(!same_members(&[], &[]));
        // A count far beyond the bytes, an unknown encoding.
        assert!(!same_members(
            &[2, 0x80, 255, 255, 255, 255],
            &[2, 0x80, 255, 255, 255, 255]
        ));
        assert!(!same_members(&[2, 1, 0xc5], &[2, 1, 0xc5]));
    }
}
