//! `ecmigrate terraform PLAN`: the HCL file that hands a finished migration on to the team's Terraform.
//! It holds an `import` block and an `aws_elasticache_replication_group` resource that match the new group
//! (so `terraform plan` shows an import and no replacement), the AUTH token as a sensitive variable or a
//! Secrets Manager data source (a reference, never the value), and a `removed` block that makes Terraform
//! forget the old group without destroying it.
//!
//! The values come from a fresh describe of the new group first (what the provider will read at import),
//! then the plan's target settings, then what the run recorded (preflight's engine version). Attributes the
//! provider forces a replacement on (`at_rest_encryption_enabled`, `kms_key_id`, `subnet_group_name`,
//! `port`, `snapshot_name`) are written from the describe only, or left out.

use std::collections::BTreeMap;

use serde::Serialize;

use super::hcl::{Block, Body, Expr, identifier_for, is_identifier};
use crate::cloud::{CloudError, CloudRead, ReplicationGroup};
use crate::engine::state::{RunState, RunStatus};
use crate::plan::{LoadedPlan, StepKind};
use crate::secret::TokenStore;
use crate::steps::records::{BackupOutputs, PreflightResolved, RestoreOutputs};

pub const RESOURCE_TYPE: &str = "aws_elasticache_replication_group";

/// Why there is no hand-off to write.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("`{flag}` `{name}` is not a Terraform name")]
    BadName { flag: &'static str, name: String },
    #[error("plan `{plan}` has no `restore_encrypted` step: it creates no new group to hand on")]
    NoRestoreStep { plan: String },
    #[error("plan `{plan}` has not been run")]
    NotRun { plan: String },
    #[error(
        "the run of plan `{plan}` has not finished `restore_encrypted` (the run is {state}): there is no new group to import yet"
    )]
    NotRestored { plan: String, state: &'static str },
    #[error(
        "the run of plan `{plan}` was rolled back: clients use `{source_id}` again, so `{target_id}` is not the group to hand on"
    )]
    RolledBack {
        plan: String,
        source_id: String,
        target_id: String,
    },
    #[error("the new group `{target_id}` does not exist any more: there is nothing to import")]
    TargetGone { target_id: String },
    #[error("cannot describe the new group `{target_id}`: {cause}")]
    Describe {
        target_id: String,
        cause: CloudError,
    },
}

/// The Terraform names of the new group's resource and of the old group's.
#[derive(Debug, Clone)]
pub struct Names {
    pub resource: String,
    pub old_resource: String,
}

impl Names {
    /// The names given (checked), else ones made from the group ids (`orders-enc` → `orders_enc`).
    pub fn new(
        plan: &LoadedPlan,
        resource: Option<&str>,
        old_resource: Option<&str>,
    ) -> Result<Names, HandoffError> {
        let pick = |given: Option<&str>, flag: &'static str, id: &str| match given {
            Some(name) if is_identifier(name) => Ok(name.to_string()),
            Some(name) => Err(HandoffError::BadName {
                flag,
                name: name.to_string(),
            }),
            None => Ok(identifier_for(id)),
        };
        Ok(Names {
            resource: pick(
                resource,
                "--resource-name",
                &plan.plan.target().replication_group_id,
            )?,
            old_resource: pick(
                old_resource,
                "--old-resource-name",
                &plan.plan.source.replication_group_id,
            )?,
        })
    }
}

/// How the resource gets its AUTH token.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenRef {
    /// A sensitive input variable; the token is kept in `store` (`file:…`, `env:…`).
    Variable { name: String, store: String },
    /// A `data "aws_secretsmanager_secret_version"` read of the secret ecmigrate used.
    SecretsManager { name: String, secret_id: String },
    /// RBAC: no token; the group names its user groups (`user_group_ids`).
    UserGroups { ids: Vec<String> },
}

/// Cluster mode enabled (shards) or disabled (one primary and its replicas).
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    Cluster {
        num_node_groups: u32,
        replicas_per_node_group: u32,
    },
    Single {
        num_cache_clusters: u32,
    },
}

/// The new group as the resource block states it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGroup {
    pub id: String,
    pub description: String,
    pub engine: String,
    /// As the provider takes it (`7.0`, not the `7.0.7` the group reports).
    pub engine_version: Option<String>,
    pub node_type: Option<String>,
    pub layout: Layout,
    pub automatic_failover_enabled: bool,
    pub multi_az_enabled: bool,
    pub at_rest_encryption_enabled: bool,
    pub kms_key_id: Option<String>,
    pub transit_encryption_enabled: bool,
    pub transit_encryption_mode: Option<String>,
    pub subnet_group_name: Option<String>,
    pub security_group_ids: Vec<String>,
    pub parameter_group_name: Option<String>,
    pub port: Option<u16>,
    pub maintenance_window: Option<String>,
    pub snapshot_window: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// Everything the file says, before it is written as HCL.
#[derive(Debug, Clone)]
pub struct Handoff {
    pub plan_name: String,
    pub run_id: String,
    pub names: Names,
    pub group: NewGroup,
    pub old_group_id: String,
    /// The old group was deleted by the run (`delete_source` done).
    pub old_group_deleted: bool,
    /// The snapshot the new group was restored from (said in a comment, never set).
    pub snapshot_name: Option<String>,
    pub token: TokenRef,
    pub run_state: RunStatus,
}

/// The hand-off of the plan's run: checked that the run created the new group, and built from the
/// group's describe.
pub async fn handoff(
    state: Option<&RunState>,
    plan: &LoadedPlan,
    cloud: &dyn CloudRead,
    names: Names,
) -> Result<Handoff, HandoffError> {
    let state = ready(state, plan)?;
    let target_id = &plan.plan.target().replication_group_id;
    let live = cloud
        .describe_group(target_id)
        .await
        .map_err(|cause| HandoffError::Describe {
            target_id: target_id.clone(),
            cause,
        })?
        .ok_or_else(|| HandoffError::TargetGone {
            target_id: target_id.clone(),
        })?;
    let preflight: PreflightResolved = state.outputs_as(StepKind::Preflight).unwrap_or_default();
    let store = crate::steps::token_store(plan);
    let token_name = format!("{}_auth_token", names.resource);
    let token = match store {
        _ if plan.plan.target().rbac().is_some() => TokenRef::UserGroups {
            ids: live.user_group_ids.clone(),
        },
        TokenStore::SecretsManager(secret_id) => TokenRef::SecretsManager {
            name: token_name,
            secret_id,
        },
        other => TokenRef::Variable {
            name: token_name,
            store: other.to_string(),
        },
    };
    Ok(Handoff {
        plan_name: plan.plan.name.clone(),
        run_id: state.run_id.clone(),
        group: new_group(&live, plan, &preflight),
        old_group_id: plan.plan.source.replication_group_id.clone(),
        old_group_deleted: state.step_done(StepKind::DeleteSource),
        snapshot_name: state
            .outputs_as::<BackupOutputs>(StepKind::Backup)
            .map(|b| b.snapshot_name),
        token,
        run_state: state.state,
        names,
    })
}

/// The run's state, once it has a new group to hand on: the plan restores one, the run did, and it was
/// not rolled back.
pub fn ready<'a>(
    state: Option<&'a RunState>,
    plan: &LoadedPlan,
) -> Result<&'a RunState, HandoffError> {
    let name = &plan.plan.name;
    if !plan
        .plan
        .steps
        .iter()
        .any(|s| s.kind() == StepKind::RestoreEncrypted)
    {
        return Err(HandoffError::NoRestoreStep { plan: name.clone() });
    }
    let state = state.ok_or_else(|| HandoffError::NotRun { plan: name.clone() })?;
    if state.state == RunStatus::RolledBack {
        return Err(HandoffError::RolledBack {
            plan: name.clone(),
            source_id: plan.plan.source.replication_group_id.clone(),
            target_id: plan.plan.target().replication_group_id.clone(),
        });
    }
    let restored = state
        .outputs_as::<RestoreOutputs>(StepKind::RestoreEncrypted)
        .is_some_and(|o| o.target_id.is_some());
    if !restored {
        return Err(HandoffError::NotRestored {
            plan: name.clone(),
            state: state.state.as_str(),
        });
    }
    Ok(state)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The resource's values: the describe's, else the plan's (attributes the provider reads back and would
/// only update), else the run's record. What forces a replacement comes from the describe alone: a value
/// the group does not have would replace it.
fn new_group(g: &ReplicationGroup, plan: &LoadedPlan, preflight: &PreflightResolved) -> NewGroup {
    let t = &plan.plan.target();
    let layout = if g.cluster_enabled {
        Layout::Cluster {
            num_node_groups: g.num_node_groups,
            replicas_per_node_group: g.nodes_per_node_group.saturating_sub(1),
        }
    } else {
        Layout::Single {
            num_cache_clusters: g.nodes_per_node_group,
        }
    };
    let engine_version = non_empty(&g.engine_version)
        .or_else(|| preflight.source_engine_version.clone())
        .filter(|v| !v.is_empty())
        .map(|v| crate::cloud::aws::create_engine_version(&v));
    NewGroup {
        id: g.id.clone(),
        description: g
            .description
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| {
                crate::steps::restore_encrypted::description(
                    &plan.plan.source.replication_group_id,
                    &plan.plan.name,
                )
            }),
        engine: non_empty(&g.engine).unwrap_or_else(|| "redis".into()),
        engine_version,
        node_type: non_empty(&g.cache_node_type).or_else(|| t.cache_node_type.clone()),
        layout,
        // ecmigrate asks for failover on a cluster only (it must be on there), and never for Multi-AZ.
        automatic_failover_enabled: g.automatic_failover_enabled.unwrap_or(g.cluster_enabled),
        multi_az_enabled: g.multi_az_enabled.unwrap_or(false),
        at_rest_encryption_enabled: g.at_rest_encryption_enabled,
        kms_key_id: g.kms_key_id.clone(),
        transit_encryption_enabled: g.transit_encryption_enabled,
        transit_encryption_mode: g.transit_encryption_mode.clone().or_else(|| {
            g.transit_encryption_enabled
                .then(|| t.transit_encryption_mode.as_str().to_string())
        }),
        subnet_group_name: g.cache_subnet_group_name.clone(),
        security_group_ids: if g.security_group_ids.is_empty() {
            t.security_group_ids.clone().unwrap_or_default()
        } else {
            g.security_group_ids.clone()
        },
        parameter_group_name: g
            .cache_parameter_group_name
            .clone()
            .or_else(|| t.cache_parameter_group_name.clone()),
        port: g.port,
        maintenance_window: g.preferred_maintenance_window.clone(),
        snapshot_window: g.snapshot_window.clone(),
        tags: g.tags.clone(),
    }
}

impl Handoff {
    pub fn resource_address(&self) -> String {
        format!("{RESOURCE_TYPE}.{}", self.names.resource)
    }
    pub fn removed_address(&self) -> String {
        format!("{RESOURCE_TYPE}.{}", self.names.old_resource)
    }

    /// The whole file.
    pub fn hcl(&self) -> String {
        let g = &self.group;
        let old = &self.old_group_id;
        let header = format!(
            "Terraform hand-off written by ecmigrate for plan `{plan}` (run {run}):\n\
             the encrypted replication group `{new}` takes the place of `{old}`.\n\
             \n\
             Put this file into the configuration that manages `{old}`, and delete that group's\n\
             resource block (the `removed` block below takes its place). `terraform plan` then shows\n\
             `{new}` to import, with no replacement, and `{old}` to forget without destroying it.\n\
             Once applied, the `import` and `removed` blocks may go.\n\
             Needs Terraform 1.7 or later (`removed` blocks) and hashicorp/aws 5.47 or later\n\
             (`transit_encryption_mode`).",
            plan = self.plan_name,
            run = self.run_id,
            new = g.id,
        );
        let mut file = Body::new()
            .comment(&header)
            .blank()
            .block(Block::new(
                "import",
                &[],
                Body::new()
                    .attr("to", Expr::Raw(self.resource_address()))
                    .str("id", &g.id),
            ))
            .blank()
            .block(self.resource())
            .blank();
        file = match &self.token {
            TokenRef::UserGroups { .. } => file,
            TokenRef::Variable { name, store } => file.block(Block::new(
                "variable",
                &[name],
                Body::new()
                    .str(
                        "description",
                        &format!(
                            "AUTH token of {}; ecmigrate keeps it in {store} (pass it as TF_VAR_{name})",
                            g.id
                        ),
                    )
                    .attr("type", Expr::Raw("string".into()))
                    .attr("sensitive", Expr::Bool(true)),
            )),
            TokenRef::SecretsManager { name, secret_id } => file.block(Block::new(
                "data",
                &["aws_secretsmanager_secret_version", name],
                Body::new()
                    .comment(&format!(
                        "The secret ecmigrate keeps the AUTH token of {} in. Terraform keeps what it\n\
                         reads in its state (marked sensitive): guard the state as you guard the secret.",
                        g.id
                    ))
                    .str("secret_id", secret_id),
            )),
        };
        let fate = if self.old_group_deleted {
            "ecmigrate deleted it after an encrypted final snapshot"
        } else {
            "it still exists; delete it once no client uses it"
        };
        file.blank()
            .comment(&format!(
                "The old, unencrypted group `{old}`: {fate}.\n\
                 Name it here as your configuration does (`ecmigrate terraform --old-resource-name`)."
            ))
            .block(Block::new(
                "removed",
                &[],
                Body::new()
                    .attr("from", Expr::Raw(self.removed_address()))
                    .block(Block::new(
                        "lifecycle",
                        &[],
                        Body::new().attr("destroy", Expr::Bool(false)),
                    )),
            ))
            .render()
    }

    fn resource(&self) -> Block {
        let g = &self.group;
        let mut body = Body::new()
            .str("replication_group_id", &g.id)
            .str("description", &g.description)
            .str("engine", &g.engine);
        let mut unreported = Vec::new();
        let mut optional = |body: Body, key: &'static str, value: Option<Expr>| match value {
            Some(v) => body.attr(key, v),
            None => {
                unreported.push(key);
                body
            }
        };
        body = optional(
            body,
            "engine_version",
            g.engine_version.clone().map(Expr::Str),
        );
        body = optional(body, "node_type", g.node_type.clone().map(Expr::Str));
        body = optional(
            body,
            "parameter_group_name",
            g.parameter_group_name.clone().map(Expr::Str),
        );
        body = match g.layout {
            Layout::Cluster {
                num_node_groups,
                replicas_per_node_group,
            } => body
                .attr("num_node_groups", Expr::Number(num_node_groups.into()))
                .attr(
                    "replicas_per_node_group",
                    Expr::Number(replicas_per_node_group.into()),
                ),
            Layout::Single { num_cache_clusters } => body.attr(
                "num_cache_clusters",
                Expr::Number(num_cache_clusters.into()),
            ),
        };
        body = body
            .attr(
                "automatic_failover_enabled",
                Expr::Bool(g.automatic_failover_enabled),
            )
            .attr("multi_az_enabled", Expr::Bool(g.multi_az_enabled));
        body = optional(
            body,
            "security_group_ids",
            (!g.security_group_ids.is_empty()).then(|| Expr::StrList(g.security_group_ids.clone())),
        );
        // The windows are the service's own when unknown; not worth a note.
        if let Some(window) = &g.maintenance_window {
            body = body.str("maintenance_window", window);
        }
        if let Some(window) = &g.snapshot_window {
            body = body.str("snapshot_window", window);
        }

        body = body
            .blank()
            .comment(
                "A change to any of these replaces the group: they are the values the group has.",
            )
            .attr(
                "at_rest_encryption_enabled",
                Expr::Bool(g.at_rest_encryption_enabled),
            );
        body = match &g.kms_key_id {
            Some(key) => body.str("kms_key_id", key),
            None => body,
        };
        body = optional(
            body,
            "subnet_group_name",
            g.subnet_group_name.clone().map(Expr::Str),
        );
        body = optional(body, "port", g.port.map(|p| Expr::Number(p.into())));
        if let Some(snapshot) = &self.snapshot_name {
            body = body.comment(&format!(
                "No snapshot_name: set after the import, it would replace the group.\n\
                 (The group was restored from `{snapshot}`.)"
            ));
        }

        let token = match &self.token {
            TokenRef::Variable { name, .. } => Some(format!("var.{name}")),
            TokenRef::SecretsManager { name, .. } => Some(format!(
                "data.aws_secretsmanager_secret_version.{name}.secret_string"
            )),
            TokenRef::UserGroups { .. } => None,
        };
        body = body.blank().attr(
            "transit_encryption_enabled",
            Expr::Bool(g.transit_encryption_enabled),
        );
        if let Some(mode) = &g.transit_encryption_mode {
            body = body.str("transit_encryption_mode", mode);
        }
        match (&token, &self.token) {
            (Some(token), _) => body = body.attr("auth_token", Expr::Raw(token.clone())),
            (None, TokenRef::UserGroups { ids }) => {
                body = body.attr("user_group_ids", Expr::StrList(ids.clone()));
            }
            (None, _) => {}
        }
        if !g.tags.is_empty() {
            body = body.blank().attr("tags", Expr::StrMap(g.tags.clone()));
        }
        if !unreported.is_empty() {
            body = body.blank().comment(&format!(
                "Not reported by the cloud nor set in the plan, so left for the import to read:\n\
                 {}.",
                unreported.join(", ")
            ));
            if unreported.contains(&"port") {
                body = body.comment(
                    "Set port if the group does not listen on 6379: a different port replaces it.",
                );
            }
        }
        if token.is_none() {
            return Block::new("resource", &[RESOURCE_TYPE, &self.names.resource], body);
        }
        body = body.blank().block(Block::new(
            "lifecycle",
            &[],
            Body::new()
                .comment(
                    "ElastiCache never returns the AUTH token, so right after the import the provider would\n\
                     plan to set the same token again (an in-place ModifyReplicationGroup). Remove this line\n\
                     to rotate the token through Terraform.",
                )
                .attr("ignore_changes", Expr::RawList(vec!["auth_token".into()])),
        ));
        Block::new("resource", &[RESOURCE_TYPE, &self.names.resource], body)
    }
}

#[cfg(test)]
mod tests;
