//! `fleet plan`: from the audit of every region and the policy, one ordinary plan per migratable
//! unencrypted group, and the manifest listing every group with its plan or the reason it has none.
//! Every plan written passes the same validation as `plan validate`; a group the policy would give an
//! invalid plan is listed with that plan's first broken rule instead.

use std::path::{Path, PathBuf};

use crate::cloud::ReplicationGroup;
use crate::error::{Error, Result};
use crate::plan::{
    AuthTokenSpec, AwsSettings, BackupStep, CutoverStep, DeleteSourceStep, Plan, PreflightStep,
    Provider, RestoreEncryptedStep, SourceSpec, StepSpec, StreamCopyStep, TargetSpec, VerifyStep,
};

use super::policy::{Policy, for_region, matches, render};
use super::{FleetGroup, Manifest, RegionOutcome};

/// What `fleet plan` decided, before anything is written.
pub struct Decided {
    pub manifest: Manifest,
    /// (file name in the fleet folder, YAML) per planned group.
    pub files: Vec<(PathBuf, String)>,
}

/// Decide every group: a plan or the reason for none. Plan names that repeat are refused here, before
/// any file is written.
pub fn decide(
    policy: &Policy,
    policy_sha256: &str,
    groups: &[(String, ReplicationGroup)],
    regions: Vec<RegionOutcome>,
) -> Result<Decided> {
    let mut decided = Decided {
        manifest: Manifest {
            version: 1,
            provider: policy.provider,
            created_at: chrono::Utc::now().to_rfc3339(),
            policy_sha256: policy_sha256.to_string(),
            regions,
            groups: Vec::new(),
        },
        files: Vec::new(),
    };
    for (region, group) in groups {
        let assessment = crate::eligibility::assess(group);
        let mut entry = FleetGroup {
            region: region.clone(),
            replication_group_id: group.id.clone(),
            engine_version: group.engine_version.clone(),
            cluster_enabled: group.cluster_enabled,
            at_rest_encryption_enabled: group.at_rest_encryption_enabled,
            transit_encryption_enabled: group.transit_encryption_enabled,
            recommended_path: assessment.recommended_path.clone(),
            plan: None,
            plan_name: None,
            target_id: None,
            skipped: None,
        };
        match why_not(policy, group, &assessment.recommended_path) {
            Some(reason) => entry.skipped = Some(reason),
            None => {
                let plan = plan_for(policy, region, group);
                let yaml = to_yaml(&plan, region);
                let file = PathBuf::from(format!("{}.yaml", plan.name));
                match crate::plan::parse_str(&yaml, &file.display().to_string()) {
                    Ok(_) => {
                        entry.plan = Some(file.clone());
                        entry.plan_name = Some(plan.name.clone());
                        entry.target_id = Some(plan.target().replication_group_id.clone());
                        decided.files.push((file, yaml));
                    }
                    Err(Error::InvalidPlan { issues }) => {
                        entry.skipped = Some(format!(
                            "the policy gives it an invalid plan: {}",
                            issues
                                .iter()
                                .map(|i| format!("{}: {}", i.field, i.rule))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        decided.manifest.groups.push(entry);
    }
    refuse_repeated_names(&decided.manifest)?;
    Ok(decided)
}

/// Why a group gets no plan, in words an operator can act on; `None`: it gets one.
fn why_not(policy: &Policy, group: &ReplicationGroup, path: &str) -> Option<String> {
    if !policy.include.is_empty() && !policy.include.iter().any(|p| matches(p, &group.id)) {
        return Some("not included by the policy (`include`)".into());
    }
    if let Some(p) = policy.exclude.iter().find(|p| matches(p, &group.id)) {
        return Some(format!("excluded by the policy (`exclude: {p}`)"));
    }
    if let Some(why) = path.strip_prefix("ineligible: ") {
        return Some(format!("ineligible: {why}"));
    }
    match path {
        "already_encrypted" => {
            return Some("already encrypted at rest and in transit: nothing to do".into());
        }
        "in_place_transit" => {
            return Some(
                "encrypted at rest already: in-place transit encryption is the path (no new group needed)"
                    .into(),
            );
        }
        _ => {}
    }
    if let Err(why) = crate::eligibility::node_type_supports_encryption(&group.cache_node_type) {
        return Some(format!("ineligible: {why}"));
    }
    if !group.is_available() {
        return Some(format!(
            "status `{}`: only available groups are planned; plan again when it is available",
            group.status
        ));
    }
    None
}

fn plan_for(policy: &Policy, region: &str, group: &ReplicationGroup) -> Plan {
    let r = |pattern: &str| render(pattern, &group.id, region);
    let token = &policy.auth_token;
    let cut = &policy.cutover;
    let mut steps = vec![
        StepSpec::Preflight(PreflightStep {}),
        StepSpec::Backup(BackupStep::default()),
        StepSpec::RestoreEncrypted(RestoreEncryptedStep::default()),
    ];
    if policy.stream_copy {
        steps.push(StepSpec::StreamCopy(StreamCopyStep {}));
    }
    steps.push(StepSpec::Verify(VerifyStep {
        full: policy.verify_full,
        ..VerifyStep::default()
    }));
    steps.push(StepSpec::Cutover(CutoverStep {
        strategy: cut.strategy,
        alias: cut.alias.as_deref().map(r),
        hosted_zone_id: for_region(&cut.hosted_zone_ids, region).map(str::to_string),
        record_name: cut.record_name.as_deref().map(r),
        command: cut.command.as_deref().map(r),
        postpone: cut.postpone,
        postpone_flag_file: None,
        max_write_pause_ms: cut.max_write_pause_ms,
        fence_attempts: None,
        grace_seconds: None,
        seal_source_hours: cut.seal_source_hours,
        disconnect_clients: None,
        before_switch: None,
        after_switch: None,
    }));
    if policy.delete_source {
        // The policy's `delete_source: true` is the operator's typed-out consent, given once for the
        // fleet; each plan still names its own source, so a plan copied elsewhere deletes nothing else.
        steps.push(StepSpec::DeleteSource(DeleteSourceStep {
            confirm: Some(group.id.clone()),
            ..DeleteSourceStep::default()
        }));
    }
    Plan {
        version: 1,
        name: r(&policy.plan_name),
        provider: policy.provider,
        aws: (policy.provider == Provider::Aws).then(|| AwsSettings {
            region: Some(region.to_string()),
            profile: None,
        }),
        source: SourceSpec {
            replication_group_id: group.id.clone(),
            data_endpoint: None,
            tls_client_cert: None,
            tls_client_key: None,
            tls_ca_file: None,
            auth_token: None,
            auth: None,
        },
        target: Some(TargetSpec {
            replication_group_id: r(&policy.target_id),
            kms_key_id: for_region(&policy.kms_keys, region).map(str::to_string),
            transit_encryption_mode: policy.transit_encryption_mode,
            auth_token: Some(AuthTokenSpec {
                generate: token.generate,
                file: token.file.as_deref().map(|f| PathBuf::from(r(f))),
                env: token.env.as_deref().map(r),
                secrets_manager: token.secrets_manager.as_deref().map(r),
            }),
            auth: None,
            cache_node_type: None,
            num_cache_clusters: None,
            num_node_groups: None,
            replicas_per_node_group: None,
            cache_subnet_group_name: None,
            security_group_ids: None,
            cache_parameter_group_name: None,
            port: None,
            tags: None,
            data_endpoint: None,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
        }),
        steps,
    }
}

/// The plan as YAML under a header saying where it came from and how to run it alone.
fn to_yaml(plan: &Plan, region: &str) -> String {
    let body = serde_saphyr::to_string(plan).unwrap_or_default();
    format!(
        "# Written by `ecmigrate fleet plan` for {source} ({region}); `fleet plan` writes it again.\n# Alone: ecmigrate run {name}.yaml --dry-run, then ecmigrate run {name}.yaml\n{body}",
        source = plan.source.replication_group_id,
        name = plan.name,
    )
}

fn refuse_repeated_names(manifest: &Manifest) -> Result<()> {
    let mut seen = std::collections::BTreeMap::new();
    for g in manifest.planned() {
        let name = g.plan_name.clone().unwrap_or_default();
        if let Some(first) = seen.insert(name.clone(), g) {
            return Err(Error::usage(
                format!(
                    "plan_name: `{name}` is given to both {} ({}) and {} ({}); each plan needs its own state folder",
                    first.replication_group_id, first.region, g.replication_group_id, g.region
                ),
                "put `{region}` in the policy's plan_name, e.g. `plan_name: \"{region}-{group}\"`",
            ));
        }
    }
    Ok(())
}

/// Write the plans and the manifest into `dir` (created if missing). Returns, per plan file, whether it
/// changed; a plan already running keeps its ledger, which refuses a changed started step.
pub fn write(dir: &Path, decided: &Decided) -> Result<Vec<(PathBuf, bool)>> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::failed(
            format!("cannot create the fleet folder {}: {e}", dir.display()),
            "choose a writable --out folder",
        )
    })?;
    let mut written = Vec::new();
    for (file, yaml) in &decided.files {
        let path = dir.join(file);
        let changed = std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str());
        if changed {
            std::fs::write(&path, yaml).map_err(|e| {
                Error::failed(
                    format!("cannot write {}: {e}", path.display()),
                    "check that the fleet folder is writable and the disk has room",
                )
            })?;
        }
        written.push((path, changed));
    }
    decided.manifest.save(dir)?;
    Ok(written)
}
