//! The two endpoints of `copy` and `verify`: URLs, passwords from environment variables, a CA file, a
//! client certificate.

use std::path::PathBuf;

use clap::Args;

use crate::data::connect::{ClientCert, RedisEndpoint};
use crate::error::{Error, Result};
use crate::secret::Secret;

#[derive(Args, Debug)]
pub struct EndpointArgs {
    /// Source: redis://[:password@]host:port[/db] or rediss://… (TLS).
    pub src_url: String,
    /// Target, in the same form.
    pub dst_url: String,
    /// PEM CA for rediss:// endpoints (instead of the system roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Environment variable holding the source's password (keeps it out of shell history).
    #[arg(long)]
    pub src_password_env: Option<String>,
    /// Environment variable holding the target's password.
    #[arg(long)]
    pub dst_password_env: Option<String>,
    /// PEM client certificate presented to every rediss:// endpoint (servers with `tls-auth-clients yes`).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

fn password(flag: &str, var: &Option<String>) -> Result<Option<Secret>> {
    match var {
        None => Ok(None),
        Some(name) => match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
            _ => Err(Error::usage(
                format!("{flag} names `{name}`, which is not set"),
                format!("export {name}=… first, or drop {flag}"),
            )),
        },
    }
}

impl EndpointArgs {
    pub fn resolve(&self) -> Result<(RedisEndpoint, RedisEndpoint)> {
        let src_pw = password("--src-password-env", &self.src_password_env)?;
        let dst_pw = password("--dst-password-env", &self.dst_password_env)?;
        let hint = "write it as redis://[:password@]host:port[/db] or rediss://… for TLS";
        let src = RedisEndpoint::from_url(&self.src_url, src_pw, self.ca_file.clone())
            .map_err(|e| Error::usage(format!("SRC_URL {e}"), hint))?;
        let dst = RedisEndpoint::from_url(&self.dst_url, dst_pw, self.ca_file.clone())
            .map_err(|e| Error::usage(format!("DST_URL {e}"), hint))?;
        for (flag, file, what) in [
            ("--ca-file", &self.ca_file, "the PEM file of the CA"),
            (
                "--cert",
                &self.cert,
                "the PEM file of the client certificate",
            ),
            (
                "--key",
                &self.key,
                "the PEM file of the certificate's private key",
            ),
        ] {
            if let Some(path) = file
                && !path.is_file()
            {
                return Err(Error::usage(
                    format!("{flag} {} does not exist", path.display()),
                    format!("give {what}"),
                ));
            }
        }
        let client_cert = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(ClientCert {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        if client_cert.is_some() && !src.tls && !dst.tls {
            return Err(Error::usage(
                "--cert: neither endpoint is rediss://, so no certificate would be presented",
                "write the TLS endpoint as rediss://host:port, or drop --cert/--key",
            ));
        }
        let with_cert = |ep: RedisEndpoint| RedisEndpoint {
            client_cert: if ep.tls { client_cert.clone() } else { None },
            ..ep
        };
        Ok((with_cert(src), with_cert(dst)))
    }
}
