//! Connections to a Redis data plane: plain, or TLS with an optional private CA, with or without AUTH.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::data::error::DataError;
use crate::secret::Secret;

/// Where and how to reach one Redis endpoint.
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// PEM CA to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// The RBAC user to sign in as (`AUTH username password`); `None` = the default user.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub db: i64,
    /// A client certificate to present over TLS (servers with `tls-auth-clients yes`).
    pub client_cert: Option<ClientCert>,
}

/// A client certificate and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientCert {
    /// Both files' bytes, or which one cannot be read.
    pub(crate) fn read(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let read = |what: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| format!("cannot read the client {what} {}: {e}", path.display()))
        };
        Ok((read("certificate", &self.cert)?, read("key", &self.key)?))
    }
}

impl RedisEndpoint {
    pub fn plain(host: impl Into<String>, port: u16) -> Self {
        RedisEndpoint {
            host: host.into(),
            port,
            tls: false,
            ca_file: None,
            username: None,
            password: None,
            db: 0,
            client_cert: None,
        }
    }

    pub fn with_db(&self, db: i64) -> Self {
        RedisEndpoint { db, ..self.clone() }
    }

    /// `redis://host:port` or `rediss://host:port`, never with the password.
    pub fn display_url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}:{}/{}", self.host, self.port, self.db)
    }

    /// A client for this endpoint (TLS with the CA file, AUTH). Its connections carry no name; ecmigrate's
    /// own go through [`connect`].
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut settings = RedisConnectionInfo::default().set_db(self.db);
        if let Some(password) = &self.password {
            settings = settings.set_password(password.expose());
        }
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        let info = addr.into_connection_info()?.set_redis_settings(settings);
        if self.tls {
            let root_cert = match &self.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "cannot read CA file",
                        format!("{}: {e}", path.display()),
                    ))
                })?),
                None => None,
            };
            let client_tls = match &self.client_cert {
                Some(c) => {
                    let (client_cert, client_key) = c.read().map_err(|e| {
                        redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "cannot read the client certificate",
                            e,
                        ))
                    })?;
                    Some(redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    })
                }
                None => None,
            };
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
        } else {
            redis::Client::open(info)
        }
    }
}

/// Open a multiplexed connection. Errors never contain the password.
pub async fn connect(endpoint: &RedisEndpoint) -> Result<MultiplexedConnection, DataError> {
    let client = endpoint.client().map_err(|e| describe(endpoint, &e))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| describe(endpoint, &e))?;
    // Every connection of ours carries this name, so the delete guard can tell ours from the
    // application's. A server that refuses CLIENT SETNAME is still usable.
    let _: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(CLIENT_NAME)
        .query_async(&mut conn)
        .await;
    Ok(conn)
}

/// The name every ecmigrate connection gives itself (CLIENT SETNAME).
pub const CLIENT_NAME: &str = "ecmigrate";

/// A client connected to a server, as `CLIENT LIST` reports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConnectedClient {
    pub addr: String,
    pub name: String,
    pub age_seconds: u64,
    pub last_command: String,
}

/// Clients of `endpoint` that are not ecmigrate's own and not replication links.
pub async fn foreign_clients(endpoint: &RedisEndpoint) -> Result<Vec<ConnectedClient>, DataError> {
    let mut conn = connect(endpoint).await?;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .map_err(|e| {
            DataError::redis(endpoint, &e)
                .command("CLIENT LIST")
                .context(format!("CLIENT LIST on {}", endpoint.display_url()))
        })?;
    Ok(list.lines().filter_map(parse_client).collect())
}

/// `(id, client)` of the application's clients in a `CLIENT LIST` reply: not ecmigrate's own, not
/// replication links, not subscribers (the capture's subscription is one and carries no name).
pub fn parse_client_list(list: &str) -> Vec<(u64, ConnectedClient)> {
    list.lines()
        .filter(|line| !client_field(line, "flags").contains('P'))
        .filter_map(|line| {
            let id = client_field(line, "id").parse().ok()?;
            Some((id, parse_client(line)?))
        })
        .collect()
}

fn client_field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("")
}

fn parse_client(line: &str) -> Option<ConnectedClient> {
    let field = |k: &str| client_field(line, k);
    let name = field("name");
    let flags = field("flags");
    if name.starts_with(CLIENT_NAME) || flags.contains('S') || flags.contains('M') {
        return None;
    }
    Some(ConnectedClient {
        addr: field("addr").to_string(),
        name: name.to_string(),
        age_seconds: field("age").parse().unwrap_or(0),
        last_command: field("cmd").to_string(),
    })
}

/// A failed connection, as every connection error reads (the password scrubbed by [`DataError::redis`]).
fn describe(endpoint: &RedisEndpoint, e: &redis::RedisError) -> DataError {
    DataError::redis(endpoint, e).context(format!("cannot connect to {}", endpoint.display_url()))
}

/// A dedicated publish/subscribe connection (for keyspace notifications).
pub async fn pubsub(endpoint: &RedisEndpoint) -> Result<redis::aio::PubSub, DataError> {
    let client = endpoint.client().map_err(|e| describe(endpoint, &e))?;
    client
        .get_async_pubsub()
        .await
        .map_err(|e| describe(endpoint, &e))
}

impl RedisEndpoint {
    /// Parse `redis://[:password@]host:port[/db]` or `rediss://…` (TLS). A password in the URL is allowed
    /// but `password` (from an environment variable) keeps it out of shell history and wins.
    pub fn from_url(
        url: &str,
        password: Option<Secret>,
        ca_file: Option<PathBuf>,
    ) -> Result<RedisEndpoint, DataError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("rediss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else {
            return Err(DataError::InvalidUrl(
                "must start with redis:// or rediss:// (TLS)".into(),
            ));
        };
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, db)) if !db.is_empty() => (
                hp,
                db.parse::<i64>().map_err(|_| {
                    DataError::InvalidUrl(format!("database `{db}` is not a number"))
                })?,
            ),
            Some((hp, _)) => (hp, 0),
            None => (hostpart, 0),
        };
        let (host, port) = split_host_port(hostport)?;
        if host.is_empty() {
            return Err(DataError::InvalidUrl("has no host".into()));
        }
        let url_password = auth
            .map(|a| a.rsplit_once(':').map(|(_, p)| p).unwrap_or(a))
            .filter(|p| !p.is_empty());
        let password = password.or_else(|| url_password.map(Secret::new));
        Ok(RedisEndpoint {
            host: host.to_string(),
            port,
            tls,
            ca_file: if tls { ca_file } else { None },
            username: None,
            password,
            db,
            client_cert: None,
        })
    }
}

/// `host[:port]` or `[v6 address][:port]` (default port 6379); an unclosed `[`, text after `]` other than
/// `:port`, or a bare IPv6 address are refused rather than guessed at.
fn split_host_port(hostport: &str) -> Result<(&str, u16), DataError> {
    let port_of = |p: &str| {
        p.parse::<u16>().map_err(|_| {
            DataError::InvalidUrl(format!("port `{p}` is not a number from 1 to 65535"))
        })
    };
    if let Some(rest) = hostport.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(DataError::InvalidUrl(
                "an IPv6 address opened with `[` is not closed with `]`".into(),
            ));
        };
        return match after {
            "" => Ok((host, 6379)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host, port_of(p)?)),
                None => Err(DataError::InvalidUrl(format!(
                    "`{after}` after the address: write `[address]:port`"
                ))),
            },
        };
    }
    match hostport.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h, port_of(p)?)),
        Some(_) => Err(DataError::InvalidUrl(
            "an IPv6 address must be written in brackets: `[::1]:6379`".into(),
        )),
        None => Ok((hostport, 6379)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let e = RedisEndpoint::from_url("rediss://:s3cret-token-value@10.0.0.1:6380/2", None, None)
            .unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls, e.db),
            ("10.0.0.1", 6380, true, 2)
        );
        assert_eq!(e.password.unwrap().expose(), "s3cret-token-value");
        let e = RedisEndpoint::from_url("redis://localhost", Some(Secret::new("env-token")), None)
            .unwrap();
        assert_eq!((e.port, e.tls, e.db), (6379, false, 0));
        assert_eq!(e.password.unwrap().expose(), "env-token");
        assert!(RedisEndpoint::from_url("http://x:1", None, None).is_err());
        assert!(RedisEndpoint::from_url("redis://x:99999", None, None).is_err());
        assert!(
            !RedisEndpoint::from_url("rediss://:pw@h:1", None, None)
                .unwrap()
                .display_url()
                .contains("pw")
        );
    }

    #[test]
    fn ipv6_addresses_need_their_brackets() {
        let e = RedisEndpoint::from_url("redis://:pw@[::1]:7000/3", None, None).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.db), ("::1", 7000, 3));
        let e = RedisEndpoint::from_url("redis://[::1]", None, None).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 6379));
        for bad in [
            "redis://:pw@[::1",
            "redis://[::1]x",
            "redis://::1",
            "redis://[::1]:port",
        ] {
            let err = RedisEndpoint::from_url(bad, None, None).unwrap_err();
            assert!(!err.to_string().contains("pw"), "{err}");
        }
    }

    #[test]
    fn client_list_lines_keep_only_foreign_clients() {
        let app = "id=7 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=9 name=app age=42 idle=1 flags=N db=0 cmd=get";
        let ours = "id=8 addr=127.0.0.1:5001 laddr=127.0.0.1:6379 fd=10 name=ecmigrate age=1 idle=0 flags=N db=0 cmd=client|list";
        let replica = "id=9 addr=127.0.0.1:5002 laddr=127.0.0.1:6379 fd=11 name= age=100 idle=0 flags=S db=0 cmd=replconf";
        let c = parse_client(app).unwrap();
        assert_eq!(
            (c.name.as_str(), c.age_seconds, c.last_command.as_str()),
            ("app", 42, "get")
        );
        assert_eq!(c.addr, "127.0.0.1:5000");
        assert!(parse_client(ours).is_none());
        assert!(parse_client(replica).is_none());
    }
}
