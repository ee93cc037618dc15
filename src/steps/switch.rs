//! The endpoint switch of a cutover, and of a rollback (the same strategy, pointing back): the sandbox
//! alias, a Route53 CNAME, the operator's command, or a manual change; and the operator's hook commands.
//! Every command sees the endpoints in its environment, never the token itself (only where it is kept).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cloud::{CloudError, DnsRecord, Endpoint, ReplicationGroup};
use crate::engine::StepContext;
use crate::error::{Error, Result};
use crate::plan::{CutoverStep, CutoverStrategy};
use crate::steps::{cloud_error, token_store};

/// TTL given to a CNAME that did not exist before the switch.
const NEW_RECORD_TTL: u64 = 60;
/// Longest wait for a switch or hook command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for Route53 to report a change `INSYNC`.
const DNS_SYNC_TIMEOUT: Duration = Duration::from_secs(300);

/// One side of the switch: a group and the endpoint its clients use: the primary endpoint, or for a
/// cluster-mode-enabled group its configuration endpoint (which `ReplicationGroup::primary_endpoint`
/// carries for such a group: AWS reports no primary endpoint for it, and a cluster client needs the
/// configuration endpoint to find every shard).
#[derive(Debug, Clone)]
pub struct Side {
    pub group_id: String,
    pub endpoint: Endpoint,
    pub reader: Option<Endpoint>,
    pub tls: bool,
    pub cluster_enabled: bool,
    /// Its primaries: one per shard of a cluster-mode-enabled group, else one.
    pub primaries: u32,
}

impl Side {
    fn of(group: &ReplicationGroup) -> Result<Side> {
        let endpoint = group.primary_endpoint.clone().ok_or_else(|| {
            Error::failed(
                format!(
                    "group `{}` reports no {}",
                    group.id,
                    endpoint_kind(group.cluster_enabled)
                ),
                "wait until the group is available, then run again",
            )
        })?;
        Ok(Side {
            group_id: group.id.clone(),
            endpoint,
            // A cluster has no reader endpoint: its clients read replicas through the configuration
            // endpoint.
            reader: group
                .reader_endpoint
                .clone()
                .filter(|_| !group.cluster_enabled),
            tls: group.transit_encryption_enabled,
            cluster_enabled: group.cluster_enabled,
            primaries: if group.cluster_enabled {
                group.num_node_groups.max(1)
            } else {
                1
            },
        })
    }

    /// `primary endpoint` or `configuration endpoint`: what `endpoint` is.
    pub fn endpoint_kind(&self) -> &'static str {
        endpoint_kind(self.cluster_enabled)
    }

    /// The labels of a `ClientPause` (or a `SealSource`) on this side's primaries, for its readable line.
    pub fn pause_labels(&self) -> [(&'static str, String); 2] {
        use crate::engine::events::labels::{PAUSED_GROUP, PAUSED_PRIMARIES};
        [
            (PAUSED_GROUP, self.group_id.clone()),
            (PAUSED_PRIMARIES, self.primaries.to_string()),
        ]
    }
}

fn endpoint_kind(cluster_enabled: bool) -> &'static str {
    if cluster_enabled {
        "configuration endpoint"
    } else {
        "primary endpoint"
    }
}

/// A switch from one side to the other with the step's strategy.
pub struct Switch<'a> {
    pub spec: &'a CutoverStep,
    pub from: Side,
    pub to: Side,
    /// `cutover` or `rollback`.
    pub purpose: &'static str,
}

/// What the switch did, and how long clients may keep the old address.
pub struct Switched {
    pub details: Value,
    pub dns_change: Option<String>,
    pub ttl: Duration,
}

impl<'a> Switch<'a> {
    /// A switch of the clients of `from` over to `to`.
    pub fn new(
        spec: &'a CutoverStep,
        from: &ReplicationGroup,
        to: &ReplicationGroup,
        purpose: &'static str,
    ) -> Result<Switch<'a>> {
        Ok(Switch {
            spec,
            from: Side::of(from)?,
            to: Side::of(to)?,
            purpose,
        })
    }

    /// The Route53 zone and record of the step, and the record as it is now.
    async fn current_record(
        &self,
        ctx: &StepContext,
    ) -> std::result::Result<(String, String, Option<DnsRecord>), CloudError> {
        let zone = self.spec.hosted_zone_id.clone().unwrap_or_default();
        let name = self.spec.record_name.clone().unwrap_or_default();
        let current = ctx.cloud.dns_record(&zone, &name).await?;
        Ok((zone, name, current))
    }

    /// The environment of the switch command and the hooks.
    pub fn env(&self, ctx: &StepContext) -> Vec<(String, String)> {
        let to = &self.to;
        let reader = to.reader.as_ref().unwrap_or(&to.endpoint);
        let token_ref = if to.tls {
            token_store(&ctx.plan).to_string()
        } else {
            String::new()
        };
        vec![
            ("ECMIGRATE_PURPOSE".into(), self.purpose.into()),
            ("ECMIGRATE_PLAN".into(), ctx.plan.plan.name.clone()),
            ("ECMIGRATE_NEW_GROUP".into(), to.group_id.clone()),
            ("ECMIGRATE_NEW_ENDPOINT".into(), to.endpoint.host.clone()),
            ("ECMIGRATE_NEW_READER_ENDPOINT".into(), reader.host.clone()),
            ("ECMIGRATE_PORT".into(), to.endpoint.port.to_string()),
            (
                "ECMIGRATE_TLS".into(),
                if to.tls { "1" } else { "0" }.into(),
            ),
            ("ECMIGRATE_TOKEN_REF".into(), token_ref),
            ("ECMIGRATE_OLD_GROUP".into(), self.from.group_id.clone()),
            (
                "ECMIGRATE_OLD_ENDPOINT".into(),
                self.from.endpoint.host.clone(),
            ),
            (
                "ECMIGRATE_OLD_PORT".into(),
                self.from.endpoint.port.to_string(),
            ),
        ]
    }

    /// Before the fence. `manual`: say exactly what to change and wait until the operator confirms.
    pub fn prepare(&self, ctx: &StepContext) -> Result<()> {
        if self.spec.strategy != CutoverStrategy::Manual {
            return Ok(());
        }
        let to = &self.to;
        let rbac = (!ctx.plan.plan.is_in_place())
            .then(|| ctx.plan.plan.target().rbac())
            .flatten();
        let auth = if let (true, Some(r)) = (to.tls, rbac) {
            format!(
                "TLS on, RBAC: each client signs in as its user of user group {}",
                r.user_group_id
            )
        } else if to.tls {
            format!("TLS on, AUTH token from {}", token_store(&ctx.plan))
        } else {
            "no TLS, no AUTH".to_string()
        };
        ctx.note(format!(
            "repoint every client of `{}` to `{}`: {} {} ({auth}{}); clients still on the old endpoint are disconnected inside the write fence",
            self.from.group_id,
            to.group_id,
            to.endpoint_kind(),
            to.endpoint,
            if to.cluster_enabled { ", cluster mode: a cluster-aware client" } else { "" }
        ));
        if ctx.dry_run() || ctx.options.yes {
            return Ok(());
        }
        if !ctx
            .prompter
            .confirm("Have all clients been repointed to the new endpoint?")?
        {
            return Err(Error::failed(
                format!("the operator did not confirm the {}", self.purpose),
                "repoint the clients, then run the same command again",
            ));
        }
        Ok(())
    }

    /// Inside the fence: make the switch. An error is a failed switch (nothing was repointed, as far as
    /// ecmigrate can tell).
    pub async fn switch(&self, ctx: &StepContext) -> std::result::Result<Switched, String> {
        let to = &self.to;
        match self.spec.strategy {
            CutoverStrategy::SandboxAlias => {
                let alias = self.spec.alias.clone().unwrap_or_default();
                let current = ctx
                    .cloud
                    .resolve_alias(&alias)
                    .await
                    .map_err(|e| format!("resolving alias `{alias}`: {e}"))?;
                ctx.call(
                    "PointAlias",
                    json!({ "alias": alias, "from": current, "to": to.group_id }),
                );
                ctx.write
                    .point_alias(&alias, &to.group_id)
                    .await
                    .map_err(|e| format!("repointing alias `{alias}`: {e}"))?;
                Ok(Switched {
                    details: json!({ "alias": alias, "previous": current, "now": to.group_id }),
                    dns_change: None,
                    ttl: Duration::ZERO,
                })
            }
            CutoverStrategy::Route53 => {
                let (zone, name, current) = self.current_record(ctx).await.map_err(|e| {
                    format!(
                        "reading the record `{}`: {e}",
                        self.spec.record_name.as_deref().unwrap_or_default()
                    )
                })?;
                let ttl = current.as_ref().map(|r| r.ttl).unwrap_or(NEW_RECORD_TTL);
                ctx.call(
                    "ChangeResourceRecordSets",
                    json!({ "hosted_zone_id": zone, "action": "UPSERT", "name": name, "type": "CNAME",
                            "value": to.endpoint.host, "ttl": ttl, "endpoint_kind": to.endpoint_kind() }),
                );
                let change = ctx
                    .write
                    .upsert_cname(&zone, &name, &to.endpoint.host, ttl)
                    .await
                    .map_err(|e| format!("upserting the record `{name}`: {e}"))?;
                Ok(Switched {
                    details: json!({ "hosted_zone_id": zone, "record_name": name,
                                     "previous": current.map(|r| r.value), "now": to.endpoint.host,
                                     "endpoint_kind": to.endpoint_kind(),
                                     "ttl_seconds": ttl, "change_id": change }),
                    dns_change: Some(change),
                    ttl: Duration::from_secs(ttl),
                })
            }
            CutoverStrategy::Command => {
                let command = self.spec.command.clone().unwrap_or_default();
                ctx.call(
                    "SwitchCommand",
                    json!({ "command": command, "new_endpoint": to.endpoint }),
                );
                if !ctx.dry_run() {
                    run_command(ctx, "command", &command, &self.env(ctx)).await?;
                }
                Ok(Switched {
                    details: json!({ "command": command, "now": to.endpoint }),
                    dns_change: None,
                    ttl: Duration::ZERO,
                })
            }
            CutoverStrategy::Manual => Ok(Switched {
                details: json!({ "now": to.endpoint, "confirmed_by": if ctx.options.yes { "--yes" } else { "operator" } }),
                dns_change: None,
                ttl: Duration::ZERO,
            }),
        }
    }

    /// After the fence: wait until the switch is in effect (Route53: the change is `INSYNC`).
    pub async fn settle(&self, ctx: &StepContext, switched: &Switched) -> Result<()> {
        let Some(change) = &switched.dns_change else {
            return Ok(());
        };
        crate::engine::wait_until(ctx, "the DNS change", DNS_SYNC_TIMEOUT, || async {
            let status = ctx.cloud.dns_change_status(change).await?;
            Ok(if status == "INSYNC" {
                crate::engine::Poll::Ready(())
            } else {
                crate::engine::Poll::Pending(status)
            })
        })
        .await
        .map_err(|e| {
            Error::failed(
                format!("{e} (the record was changed; clients follow as their caches expire)"),
                "check the change in the Route53 console; run the same command again to resume",
            )
        })
    }

    /// A rehearsal: check what the switch will act on, report the call it would make.
    pub async fn rehearse(&self, ctx: &StepContext) -> Result<Value> {
        if let CutoverStrategy::Route53 = self.spec.strategy {
            let (_, name, current) = self.current_record(ctx).await.map_err(|e| {
                cloud_error(
                    &format!(
                        "reading the record `{}`",
                        self.spec.record_name.as_deref().unwrap_or_default()
                    ),
                    e,
                )
            })?;
            if let Some(r) = &current
                && r.record_type != "CNAME"
            {
                return Err(Error::failed(
                    format!(
                        "record `{name}` is a {} record; the route53 strategy replaces a CNAME",
                        r.record_type
                    ),
                    "point clients at a CNAME first, or use the `command` strategy",
                ));
            }
        }
        self.prepare(ctx)?;
        let switched = self
            .switch(ctx)
            .await
            .map_err(|e| Error::failed(e, "fix the switch settings of the cutover step"))?;
        Ok(switched.details)
    }
}

/// Run an operator command (`sh -c`, from the plan's folder) with `env`, bounded in time. Its output is
/// passed on as notes; a non-zero exit is an error carrying its last lines.
pub async fn run_command(
    ctx: &StepContext,
    what: &str,
    command: &str,
    env: &[(String, String)],
) -> std::result::Result<(), String> {
    let started = Instant::now();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(&ctx.plan.dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("`{what}` could not start: {e}"))?;
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "`{what}` did not finish within {} s and was killed",
                COMMAND_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("`{what}`: {e}"))?;
    let text = |bytes: &[u8]| {
        let s = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    };
    let stdout = text(&out.stdout);
    if !stdout.is_empty() {
        ctx.note(format!("`{what}` said: {stdout}"));
    }
    if out.status.success() {
        ctx.note(format!(
            "`{what}` finished in {} ms",
            started.elapsed().as_millis()
        ));
        Ok(())
    } else {
        let code = out
            .status
            .code()
            .map(|c| format!("exit status {c}"))
            .unwrap_or_else(|| "a signal".into());
        Err(format!(
            "`{what}` failed with {code}: {}",
            text(&out.stderr)
        ))
    }
}
