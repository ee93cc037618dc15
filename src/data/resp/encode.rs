//! RESP encoding of the commands the pipelined lanes send: array headers, bulk strings, decimal lengths
//! and numbers without allocating, and command heads encoded once per batch.

/// A command's array header and name, encoded once: a command sent for every key of a batch (`PTTL`,
/// `DUMP`) then costs encoding its key alone.
pub struct Head(pub(super) Vec<u8>);

impl Head {
    /// The head of a command of `args` arguments (its name included) named `name`.
    pub fn new(args: usize, name: &[u8]) -> Head {
        let mut out = Vec::with_capacity(16 + name.len());
        put_array_header(&mut out, args);
        put_bulk(&mut out, name);
        Head(out)
    }
}

pub(super) fn put_array_header(out: &mut Vec<u8>, len: usize) {
    put_prefixed_len(out, b'*', len);
}

pub(super) fn put_bulk(out: &mut Vec<u8>, value: &[u8]) {
    put_prefixed_len(out, b'$', value.len());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `prefix`, the decimal `len` and CRLF. Lengths under 1,000 (keys, most values) are written digit by
/// digit: encoding them through [`itoa_buf`] took about 200 instructions per argument (callgrind), and
/// a batch encodes two or three per key.
pub(super) fn put_prefixed_len(out: &mut Vec<u8>, prefix: u8, len: usize) {
    let digit = |d: usize| b'0' + (d % 10) as u8;
    match len {
        0..10 => out.extend_from_slice(&[prefix, digit(len), b'\r', b'\n']),
        10..100 => out.extend_from_slice(&[prefix, digit(len / 10), digit(len), b'\r', b'\n']),
        100..1000 => out.extend_from_slice(&[
            prefix,
            digit(len / 100),
            digit(len / 10),
            digit(len),
            b'\r',
            b'\n',
        ]),
        _ => {
            out.push(prefix);
            out.extend_from_slice(itoa_buf(len as i64).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Decimal digits of `n` without allocating.
pub(super) struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    /// The ASCII digits (and '-'). Bytes, not a checked `str`: the UTF-8 check of every length was 7% of
    /// a verify's instructions (callgrind, 200k keys).
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

pub(super) fn itoa_buf(n: i64) -> Digits {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let negative = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative {
        i -= 1;
        buf[i] = b'-';
    }
    Digits { buf, start: i }
}

#[cfg(test)]
mod tests {
    use super::super::{Reply, decode, to_reply};
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [
            0i64,
            7,
            -1,
            -2,
            1000,
            1_700_000_000_123,
            i64::MAX,
            i64::MIN + 1,
        ] {
            assert_eq!(itoa_buf(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn commands_are_encoded_as_resp_arrays() {
        let mut out = Vec::new();
        put_array_header(&mut out, 5);
        for arg in [&b"SET"[..], b"k", b"", b"PXAT"] {
            put_bulk(&mut out, arg);
        }
        put_bulk(&mut out, itoa_buf(1_700_000_000_123).as_bytes());
        assert_eq!(
            out,
            b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$4\r\nPXAT\r\n$13\r\n1700000000123\r\n"
        );
        // What the encoder wrote decodes back to the same arguments.
        let (frame, used) = decode::decode(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        let Reply::Array(items) = to_reply(&out, frame) else {
            panic!("not an array")
        };
        assert_eq!(items[1], Reply::Bulk(b"k"));
        assert_eq!(items[2], Reply::Bulk(b""));
        assert_eq!(items[4].int(), Some(1_700_000_000_123));
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        for len in [0usize, 9, 10, 99, 100, 999, 1000, 123_456] {
            let mut out = Vec::new();
            put_prefixed_len(&mut out, b'$', len);
            assert_eq!(out, format!("${len}\r\n").into_bytes());
        }
    }

    #[test]
    fn a_head_encodes_as_the_command_would() {
        let mut out = Vec::new();
        put_array_header(&mut out, 2);
        put_bulk(&mut out, b"PTTL");
        assert_eq!(Head::new(2, b"PTTL").0, out);
    }
}
