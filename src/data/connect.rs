//! Connections to a Redis data plane: plain, or TLS with an optional private CA, with or without AUTH.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::secret::Secret;

/// Where and how to reach one Redis endpoint.
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// PEM CA to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    pub password: Option<Secret>,
    pub db: i64,
}

impl RedisEndpoint {
    pub fn plain(host: impl Into<String>, port: u16) -> Self {
        RedisEndpoint {
            host: host.into(),
            port,
            tls: false,
            ca_file: None,
            password: None,
            db: 0,
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

    fn client(&self) -> redis::RedisResult<redis::Client> {
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
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                },
            )
        } else {
            redis::Client::open(info)
        }
    }
}

/// Open a multiplexed connection. Errors never contain the password.
pub async fn connect(endpoint: &RedisEndpoint) -> Result<MultiplexedConnection, String> {
    let client = endpoint.client().map_err(|e| describe(endpoint, &e))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| describe(endpoint, &e))
}

fn describe(endpoint: &RedisEndpoint, e: &redis::RedisError) -> String {
    let text = e.to_string();
    // Belt and braces: the redis crate does not print passwords, but a future version might.
    let text = match &endpoint.password {
        Some(p) if !p.expose().is_empty() => text.replace(p.expose(), "<redacted>"),
        _ => text,
    };
    format!("cannot connect to {}: {text}", endpoint.display_url())
}
