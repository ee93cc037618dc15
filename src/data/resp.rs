//! The copier's bulk lane: a plain request/response RESP2 connection that writes commands straight into
//! one buffer and decodes replies in place ([`decode`]), so a value read from the
//! source is copied once, from the source's reply into the target's command.
//!
//! Why not the redis crate here: its multiplexed connection parses every reply into an owned `Value`
//! (one allocation per value) and builds one `Cmd` per command; profiled on a 1M-key copy, that parsing
//! and allocating was about half of the copier's CPU, and the copier shares the machine with the servers
//! whose CPU bounds a copy. Everything else (big keys, captures, verify, fences) keeps the redis crate.
//! One connection serves one batch at a time: no multiplexing, no background task.

use std::sync::Arc;
use std::time::Duration;

use redis_protocol::resp2::types::RangeFrame;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::data::connect::{CLIENT_NAME, RedisEndpoint};
use crate::data::error::{DataError, Peer};

mod decode;
mod encode;

pub use encode::Head;
use encode::{itoa_buf, put_array_header, put_bulk};

/// How long a connection may take to open, and a round trip to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One reply, borrowing the connection's read buffer.
#[derive(Debug, PartialEq)]
pub enum Reply<'a> {
    Int(i64),
    Bulk(&'a [u8]),
    Nil,
    Status(&'a [u8]),
    Error(&'a [u8]),
    Array(Vec<Reply<'a>>),
}

impl Reply<'_> {
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The error text of an error reply.
    pub fn error(&self) -> Option<String> {
        match self {
            Reply::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        }
    }
}

/// A pipelined connection: queue commands with [`PipeConn::command`] and [`PipeConn::arg`], then
/// [`PipeConn::round_trip`] sends them all and reads one reply each.
pub struct PipeConn {
    stream: Box<dyn Stream>,
    /// The endpoint, as errors name it.
    peer: Peer,
    out: Vec<u8>,
    input: Vec<u8>,
    queued: usize,
    /// Bytes of replies one round trip may read before it gives up with [`LaneError::TooLarge`].
    reply_cap: usize,
    /// Bytes of replies read since [`PipeConn::take_read_bytes`] last asked.
    read_bytes: usize,
}

/// Why a round trip failed. After either, the connection is out of step and must be dropped.
#[derive(Debug)]
pub enum LaneError {
    /// The replies grew past the connection's cap before they were complete (bytes read so far).
    TooLarge { peer: Peer, bytes: usize },
    /// The connection broke, timed out or sent something that is not RESP.
    Broken(DataError),
}

impl std::fmt::Display for LaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaneError::TooLarge { bytes, .. } => write!(f, "the replies exceeded {bytes} bytes"),
            LaneError::Broken(e) => write!(f, "{e}"),
        }
    }
}

/// A round trip that failed where no reply bound applies: replies past the cap are a broken reply too.
impl From<LaneError> for DataError {
    fn from(e: LaneError) -> DataError {
        match e {
            LaneError::TooLarge { ref peer, .. } => DataError::Protocol {
                peer: peer.clone(),
                message: e.to_string(),
            },
            LaneError::Broken(e) => e,
        }
    }
}

/// A handshake the server's TLS refused (a certificate, a protocol version: rustls reports those as
/// `InvalidData`) is a TLS failure; one cut by the peer going away (reset, EOF) is an unreachable
/// server, as a dead node is mid-handshake.
fn handshake_failed(
    e: std::io::Error,
    tls: impl FnOnce(&dyn std::fmt::Display) -> DataError,
    unreachable: impl FnOnce(&dyn std::fmt::Display) -> DataError,
) -> DataError {
    if e.kind() == std::io::ErrorKind::InvalidData {
        tls(&e)
    } else {
        unreachable(&e)
    }
}

impl PipeConn {
    /// Connect (TLS with the endpoint's CA file, or the public roots), AUTH, SELECT its database and name
    /// the connection like every ecmigrate connection. Errors never contain the password.
    pub async fn open(endpoint: &RedisEndpoint) -> Result<PipeConn, DataError> {
        let url = endpoint.display_url();
        let text =
            |what: &str, e: &dyn std::fmt::Display| format!("cannot connect to {url}: {what}: {e}");
        let peer = || Peer::from(endpoint);
        let unreachable = |what: &str, e: &dyn std::fmt::Display| DataError::Unreachable {
            peer: peer(),
            message: text(what, e),
        };
        let tls_failed = |what: &str, e: &dyn std::fmt::Display| DataError::Tls {
            peer: peer(),
            message: text(what, e),
        };
        let timed_out = |what: &str| DataError::Timeout {
            peer: peer(),
            message: text(what, &"timed out after 5 s"),
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
        )
        .await
        .map_err(|_| timed_out("connect"))?
        .map_err(|e| unreachable("connect", &e))?;
        // Batches are written whole and answered whole: Nagle would only add delay.
        tcp.set_nodelay(true)
            .map_err(|e| unreachable("TCP_NODELAY", &e))?;
        let stream: Box<dyn Stream> = if endpoint.tls {
            let connector = tls_connector(endpoint).map_err(|e| tls_failed("TLS", &e))?;
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| tls_failed("TLS server name", &e))?;
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| timed_out("TLS handshake"))?
                .map_err(|e| {
                    handshake_failed(
                        e,
                        |e| tls_failed("TLS handshake", e),
                        |e| unreachable("TLS handshake", e),
                    )
                })?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut conn = PipeConn {
            stream,
            peer: peer(),
            out: Vec::with_capacity(64 << 10),
            input: Vec::with_capacity(64 << 10),
            queued: 0,
            reply_cap: usize::MAX,
            read_bytes: 0,
        };
        let mut checked = Vec::new();
        if let Some(password) = &endpoint.password {
            match &endpoint.username {
                Some(user) => conn
                    .command(3)
                    .arg(b"AUTH")
                    .arg(user.as_bytes())
                    .arg(password.expose().as_bytes()),
                None => conn
                    .command(2)
                    .arg(b"AUTH")
                    .arg(password.expose().as_bytes()),
            };
            checked.push("AUTH");
        }
        if endpoint.db != 0 {
            conn.command(2).arg(b"SELECT").arg_int(endpoint.db);
            checked.push("SELECT");
        }
        // A server that refuses CLIENT SETNAME is still usable (as in `connect`).
        conn.command(3)
            .arg(b"CLIENT")
            .arg(b"SETNAME")
            .arg(CLIENT_NAME.as_bytes());
        let replies = conn.round_trip().await?;
        for (what, reply) in checked.iter().zip(&replies) {
            if let Some(e) = reply.error() {
                let message = format!("cannot connect to {url}: {what} refused: {e}");
                return Err(match *what {
                    "AUTH" => DataError::Auth {
                        peer: peer(),
                        message,
                    },
                    command => DataError::Refused {
                        peer: peer(),
                        command: Some(command.into()),
                        message,
                    },
                });
            }
        }
        Ok(conn)
    }

    /// Bound the bytes of replies one round trip may read (the copier's memory bound per lane).
    pub fn set_reply_cap(&mut self, bytes: usize) {
        self.reply_cap = bytes;
    }

    /// Bytes of replies read since the last call (the copier sizes its batches by them).
    pub fn take_read_bytes(&mut self) -> usize {
        std::mem::take(&mut self.read_bytes)
    }

    /// Start a command of `args` arguments (its name included); follow with exactly that many `arg`s.
    pub fn command(&mut self, args: usize) -> &mut Self {
        put_array_header(&mut self.out, args);
        self.queued += 1;
        self
    }

    /// Start a command from its encoded head ([`Head`]); follow with the `arg`s that come after it.
    pub fn command_head(&mut self, head: &Head) -> &mut Self {
        self.out.extend_from_slice(&head.0);
        self.queued += 1;
        self
    }

    pub fn arg(&mut self, value: &[u8]) -> &mut Self {
        put_bulk(&mut self.out, value);
        self
    }

    pub fn arg_int(&mut self, value: i64) -> &mut Self {
        put_bulk(&mut self.out, itoa_buf(value).as_bytes());
        self
    }

    /// Send every queued command and read one reply for each, in order. An error reply is a reply (the
    /// caller decides); a broken connection, a timeout or bytes that are not RESP are errors.
    pub async fn round_trip(&mut self) -> Result<Vec<Reply<'_>>, LaneError> {
        let want = std::mem::take(&mut self.queued);
        let cap = self.reply_cap;
        let io = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
            self.input.clear();
            // Where each complete top-level reply starts and what it is; ranges are relative to its start.
            let mut frames: Vec<(usize, RangeFrame)> = Vec::with_capacity(want);
            let mut parsed = 0usize;
            while frames.len() < want {
                match decode::decode(&self.input[parsed..]) {
                    Ok(Some((frame, used))) => {
                        frames.push((parsed, frame));
                        parsed += used;
                        continue;
                    }
                    Ok(None) => {}
                    Err(decode::Malformed) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the server sent bytes that are not a RESP reply",
                        ));
                    }
                }
                if self.input.len() > cap {
                    return Ok(Err(self.input.len()));
                }
                // An incomplete reply: read more (at least 64 KiB of room, so a large MGET reply is
                // decoded again only a few times).
                if self.input.capacity() - self.input.len() < 64 << 10 {
                    self.input.reserve(self.input.len().max(64 << 10));
                }
                if self.stream.read_buf(&mut self.input).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ));
                }
            }
            // Request/response only: bytes beyond the replies asked for mean the connection is out of step.
            if parsed != self.input.len() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the server sent more replies than commands",
                ));
            }
            self.read_bytes += parsed;
            Ok(Ok(frames))
        };
        let frames = tokio::time::timeout(REPLY_TIMEOUT, io)
            .await
            .map_err(|_| {
                LaneError::Broken(DataError::Timeout {
                    peer: self.peer.clone(),
                    message: format!(
                        "{}: no reply within {} s",
                        self.peer,
                        REPLY_TIMEOUT.as_secs()
                    ),
                })
            })?
            .map_err(|e| LaneError::Broken(broken(&self.peer, &e)))?
            .map_err(|bytes| LaneError::TooLarge {
                peer: self.peer.clone(),
                bytes,
            })?;
        let input = &self.input;
        Ok(frames
            .into_iter()
            .map(|(base, frame)| to_reply(&input[base..], frame))
            .collect())
    }
}

/// A round trip's I/O error: bytes that are not RESP (or too many) are a protocol error, the rest a
/// connection that broke.
fn broken(peer: &Peer, e: &std::io::Error) -> DataError {
    let message = format!("{peer}: {e}");
    let peer = peer.clone();
    match e.kind() {
        std::io::ErrorKind::InvalidData => DataError::Protocol { peer, message },
        std::io::ErrorKind::TimedOut => DataError::Timeout { peer, message },
        _ => DataError::Unreachable { peer, message },
    }
}

fn to_reply(buf: &[u8], frame: RangeFrame) -> Reply<'_> {
    match frame {
        RangeFrame::Integer(i) => Reply::Int(i),
        RangeFrame::BulkString((start, end)) => Reply::Bulk(&buf[start..end]),
        RangeFrame::SimpleString((start, end)) => Reply::Status(&buf[start..end]),
        RangeFrame::Error((start, end)) => Reply::Error(&buf[start..end]),
        RangeFrame::Array(items) => {
            Reply::Array(items.into_iter().map(|f| to_reply(buf, f)).collect())
        }
        RangeFrame::Null => Reply::Nil,
    }
}

/// A rustls connector trusting the endpoint's CA file, or the public roots when it has none (as the redis
/// crate's connections do).
fn tls_connector(endpoint: &RedisEndpoint) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &endpoint.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("CA file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match &endpoint.client_cert {
        None => config.with_no_client_auth(),
        Some(c) => {
            let (cert, key) = c.read()?;
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate {}: {e}", c.cert.display()))?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| format!("client key {}: {e}", c.key.display()))?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {}: {e}", c.cert.display()))?
        }
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Keys of one batch (a SCAN reply, or keys sorted by slot), stored end to end in one buffer (one
/// allocation per batch, not per key): what the copier's and the verifier's scanners hand to their lanes.
#[derive(Default)]
pub struct KeyBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KeyBatch {
    /// The keys of a SCAN reply's key array; `None` if one of them is not a string.
    pub fn from_replies(keys: &[Reply<'_>]) -> Option<KeyBatch> {
        let mut found = KeyBatch {
            bytes: Vec::with_capacity(keys.len() * 32),
            ends: Vec::with_capacity(keys.len()),
        };
        found.extend_from_replies(keys).then_some(found)
    }

    /// Append the keys of a SCAN reply's key array; false if one of them is not a string.
    pub fn extend_from_replies(&mut self, keys: &[Reply<'_>]) -> bool {
        for key in keys {
            let Reply::Bulk(key) = key else {
                return false;
            };
            self.push(key);
        }
        true
    }

    /// These keys, in this order.
    pub fn from_keys<'k>(keys: impl IntoIterator<Item = &'k [u8]>) -> KeyBatch {
        let mut found = KeyBatch::default();
        for key in keys {
            found.push(key);
        }
        found
    }

    fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes of key names held.
    pub fn key_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The `i`th key.
    pub fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn keys(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let key = &self.bytes[start..end];
                start = end;
                key
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_cut_by_the_peer_is_unreachable_and_a_refused_one_is_tls() {
        use std::io::{Error, ErrorKind};
        let word = |kind| match handshake_failed(
            Error::new(kind, "x"),
            |_| DataError::Internal("tls".into()),
            |_| DataError::Internal("unreachable".into()),
        ) {
            DataError::Internal(w) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(word(ErrorKind::ConnectionReset), "unreachable");
        assert_eq!(word(ErrorKind::UnexpectedEof), "unreachable");
        assert_eq!(word(ErrorKind::InvalidData), "tls");
    }

    #[test]
    fn replies_borrow_the_input() {
        let input = b"*3\r\n$3\r\nFoo\r\n$-1\r\n:42\r\n";
        let (frame, used) = decode::decode(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        assert_eq!(
            to_reply(input, frame),
            Reply::Array(vec![Reply::Bulk(b"Foo"), Reply::Nil, Reply::Int(42)])
        );
        let (frame, _) = decode::decode(b"-WRONGTYPE nope\r\n").unwrap().unwrap();
        assert_eq!(
            to_reply(b"-WRONGTYPE nope\r\n", frame).error().as_deref(),
            Some("WRONGTYPE nope")
        );
        assert!(decode::decode(b"*2\r\n$3\r\nFoo\r\n").unwrap().is_none());
    }
}
