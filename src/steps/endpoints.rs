//! How steps reach the data plane of each side: the plan's `data_endpoint` override (for tunnels) or the
//! group's primary endpoint (a cluster's configuration endpoint); TLS and the AUTH token for the target.

use crate::cloud::ReplicationGroup;
use crate::data::connect::{ClientCert, RedisEndpoint};
use crate::engine::StepContext;
use crate::error::{Error, Result};
use crate::steps::Login;

fn parse_endpoint(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

/// `host:port` of a group's data plane: the plan's override (`<side>.data_endpoint`, for tunnels), else
/// the group's primary endpoint.
fn data_host_port(
    side: &str,
    plan_override: Option<&String>,
    group: &ReplicationGroup,
) -> Result<(String, u16)> {
    match plan_override {
        Some(e) => parse_endpoint(e).ok_or_else(|| {
            Error::usage(
                format!("{side}.data_endpoint `{e}` is not host:port"),
                "write it as host:port",
            )
        }),
        None => {
            // A cluster's configuration endpoint (held as its primary endpoint): the data plane finds
            // every primary from any node it reaches.
            let kind = if group.cluster_enabled {
                "configuration endpoint"
            } else {
                "primary endpoint"
            };
            let ep = group.primary_endpoint.clone().ok_or_else(|| {
                Error::failed(
                    format!("the group `{}` reports no {kind}", group.id),
                    format!("set {side}.data_endpoint in the plan"),
                )
            })?;
            Ok((ep.host, ep.port))
        }
    }
}

/// The plan's client certificate of one side, its paths resolved against the plan's folder (validation
/// made sure both or neither are given).
fn client_cert(
    ctx: &StepContext,
    cert: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
) -> Option<ClientCert> {
    Some(ClientCert {
        cert: ctx.plan.resolve(cert.as_ref()?),
        key: ctx.plan.resolve(key.as_ref()?),
    })
}

/// How to reach the source's data plane (TLS only if the source already has it).
pub fn source_data_endpoint(ctx: &StepContext, group: &ReplicationGroup) -> Result<RedisEndpoint> {
    let (host, port) =
        data_host_port("source", ctx.plan.plan.source.data_endpoint.as_ref(), group)?;
    let source = &ctx.plan.plan.source;
    Ok(RedisEndpoint {
        host,
        port,
        tls: group.transit_encryption_enabled,
        ca_file: ctx.cloud.data_plane_ca(),
        username: None,
        password: None,
        db: 0,
        client_cert: client_cert(ctx, &source.tls_client_cert, &source.tls_client_key),
    })
}

/// How to reach the source over TLS once an in-place step turned it on: its endpoint (or the plan's
/// `data_endpoint`), with the plan's CA (`source.tls_ca_file`) or the cloud's.
pub fn source_tls_endpoint(ctx: &StepContext, group: &ReplicationGroup) -> Result<RedisEndpoint> {
    let mut ep = source_data_endpoint(ctx, group)?;
    ep.tls = true;
    if let Some(ca) = &ctx.plan.plan.source.tls_ca_file {
        ep.ca_file = Some(ctx.plan.resolve(ca));
    }
    Ok(ep)
}

/// How to reach the target's data plane: TLS with the plan's CA (or the cloud's), and the AUTH token.
pub fn target_data_endpoint(
    ctx: &StepContext,
    group: &ReplicationGroup,
    login: Login,
) -> Result<RedisEndpoint> {
    let target = &ctx.plan.plan.target();
    let (host, port) = data_host_port("target", target.data_endpoint.as_ref(), group)?;
    let ca_file = target
        .tls_ca_file
        .as_ref()
        .map(|p| ctx.plan.resolve(p))
        .or_else(|| ctx.cloud.data_plane_ca());
    Ok(RedisEndpoint {
        host,
        port,
        tls: true,
        ca_file,
        username: login.user,
        password: Some(login.password),
        db: 0,
        client_cert: client_cert(ctx, &target.tls_client_cert, &target.tls_client_key),
    })
}
