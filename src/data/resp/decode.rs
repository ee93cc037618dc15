//! The bulk lane's RESP2 reply decoder: a reply's frame (ranges into the bytes read, no copy), or "not
//! complete yet", or malformed.
//!
//! Why not redis-protocol's `decode_range`, as before: its parser combinators spent about 450
//! instructions per reply (callgrind, a 200k-key verify: 364M of the process's 923M past its TLS
//! setup), and a comparison decodes two replies per key on each side. This one reads each header line
//! once and a bulk string's bytes not at all.

use redis_protocol::resp2::types::RangeFrame;

/// Deeper nesting is refused: the bulk lane's replies nest two levels (SCAN: a cursor and an array).
const MAX_DEPTH: usize = 16;

/// Bytes that are not a RESP2 reply.
#[derive(Debug, PartialEq)]
pub(super) struct Malformed;

/// The first reply of `buf` and its length in bytes, ranges relative to `buf`; `None` while `buf`
/// ends before the reply does.
pub(super) fn decode(buf: &[u8]) -> Result<Option<(RangeFrame, usize)>, Malformed> {
    frame(buf, 0, 0)
}

fn frame(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(RangeFrame, usize)>, Malformed> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    if !b"+-:$*".contains(&kind) {
        return Err(Malformed);
    }
    let start = pos + 1;
    let Some(cr) = line_end(buf, start)? else {
        return Ok(None);
    };
    let next = cr + 2;
    let line = &buf[start..cr];
    let decoded = match kind {
        b'+' => (RangeFrame::SimpleString((start, cr)), next),
        b'-' => (RangeFrame::Error((start, cr)), next),
        b':' => (RangeFrame::Integer(int(line)?), next),
        b'$' => match length(line)? {
            None => (RangeFrame::Null, next),
            Some(n) => {
                let end = next.checked_add(n).ok_or(Malformed)?;
                let Some(tail) = buf.get(end..end.checked_add(2).ok_or(Malformed)?) else {
                    return Ok(None);
                };
                if tail != b"\r\n" {
                    return Err(Malformed);
                }
                (RangeFrame::BulkString((next, end)), end + 2)
            }
        },
        b'*' => match length(line)? {
            None => (RangeFrame::Null, next),
            Some(n) => {
                if depth >= MAX_DEPTH {
                    return Err(Malformed);
                }
                // Each element takes at least 3 bytes: no more room is reserved than what was read
                // could hold, whatever count the server announced.
                let mut items = Vec::with_capacity(n.min((buf.len() - next) / 3));
                let mut at = next;
                for _ in 0..n {
                    match frame(buf, at, depth + 1)? {
                        Some((item, end)) => {
                            items.push(item);
                            at = end;
                        }
                        None => return Ok(None),
                    }
                }
                (RangeFrame::Array(items), at)
            }
        },
        _ => return Err(Malformed),
    };
    Ok(Some(decoded))
}

/// The index of the CR that ends the line starting at `start`; `None` while its LF has not arrived.
fn line_end(buf: &[u8], start: usize) -> Result<Option<usize>, Malformed> {
    let Some(lf) = buf[start..].iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let lf = start + lf;
    if lf == start || buf[lf - 1] != b'\r' {
        return Err(Malformed);
    }
    Ok(Some(lf - 1))
}

/// A bulk string's or an array's length: `None` for -1 (nil).
fn length(line: &[u8]) -> Result<Option<usize>, Malformed> {
    match int(line)? {
        -1 => Ok(None),
        n => usize::try_from(n).map(Some).map_err(|_| Malformed),
    }
}

/// A decimal integer, optionally negative, that fits an `i64`.
fn int(line: &[u8]) -> Result<i64, Malformed> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() {
        return Err(Malformed);
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(Malformed);
        }
        let d = i64::from(d - b'0');
        // Accumulated with its sign, so that i64::MIN fits.
        v = v
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(d)
                } else {
                    v.checked_add(d)
                }
            })
            .ok_or(Malformed)?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::resp2::decode::decode_range;

    const REPLIES: &[&[u8]] = &[
        b":42\r\n",
        b":-2\r\n",
        b":-9223372036854775808\r\n",
        b"$3\r\nFoo\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"+OK\r\n",
        b"-WRONGTYPE Operation against a key\r\n",
        b"$4\r\na\r\nb\r\n",
        b"*3\r\n$3\r\nFoo\r\n$-1\r\n:42\r\n",
        b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n",
    ];

    #[test]
    fn replies_decode_as_redis_protocol_decodes_them() {
        for reply in REPLIES {
            let mine = decode(reply).unwrap().unwrap();
            let theirs = decode_range(reply).unwrap().unwrap();
            assert_eq!(mine, theirs, "{}", String::from_utf8_lossy(reply));
            assert_eq!(mine.1, reply.len());
        }
    }

    #[test]
    fn a_reply_cut_anywhere_is_not_complete_yet() {
        for reply in REPLIES {
            for cut in 0..reply.len() {
                assert_eq!(decode(&reply[..cut]), Ok(None), "{:?}", &reply[..cut]);
            }
        }
        // Only the first of two replies is decoded.
        let two = b":1\r\n:2\r\n";
        assert_eq!(decode(two).unwrap().unwrap().1, 4);
    }

    #[test]
    fn bytes_that_are_not_resp_are_refused() {
        for bad in [
            &b"?\r\n"[..],
            b":\r\n",
            b":12a\r\n",
            b":1\n",
            b"\n",
            b":99999999999999999999\r\n",
            b"$-2\r\n",
            b"$3\r\nFooX\r\n",
            b"*-5\r\n",
            b"*1\r\n!\r\n",
        ] {
            assert_eq!(decode(bad), Err(Malformed), "{:?}", bad);
        }
        // Nesting past the bound.
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(decode(&deep), Err(Malformed));
        // A huge announced count is not a huge allocation: it is only incomplete.
        assert_eq!(decode(b"*9223372036854775807\r\n:1\r\n"), Ok(None));
    }
}
