//! The interactive wizard: pick an unencrypted group, choose the target's shape, KMS key, AUTH token and
//! its store, streaming and cutover, and write a commented plan. Nothing is written before the last
//! question is answered, so Ctrl-C at any prompt leaves nothing behind.

use std::path::{Path, PathBuf};

use dialoguer::{Confirm, Input, Select};

use crate::cloud::{CloudRead, KmsKey, ReplicationGroup};
use crate::error::{Error, Result};
use crate::plan::{Provider, rules};

/// Everything the operator chose.
#[derive(Debug, Clone)]
pub struct Answers {
    pub provider: Provider,
    pub name: String,
    pub source: String,
    pub target: String,
    pub node_type: Option<String>,
    pub replicas: Option<u32>,
    /// `None` = the service-managed key.
    pub kms_key_id: Option<String>,
    pub generate_token: bool,
    pub show_token: bool,
    pub store: TokenChoice,
    pub stream_copy: bool,
    pub cutover_alias: Option<String>,
    pub delete_source: bool,
    pub out: PathBuf,
}

#[derive(Debug, Clone)]
pub enum TokenChoice {
    File(String),
    Env(String),
    SecretsManager(String),
}

fn prompt_error(e: dialoguer::Error) -> Error {
    // Leave the terminal as it was: dialoguer hides the cursor while a list is shown.
    let _ = console::Term::stderr().show_cursor();
    match e {
        dialoguer::Error::IO(io) if io.kind() == std::io::ErrorKind::Interrupted => {
            Error::Interrupted
        }
        other => Error::failed(
            format!("the prompt failed: {other}"),
            "write a plan by hand and use `ecmigrate run PLAN`",
        ),
    }
}

fn say(text: &str) {
    let _ = console::Term::stderr().write_line(text);
}

/// A cloud check to run from inside a (blocking) prompt.
pub type BlockingCheck<'a> =
    dyn Fn(std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>) -> bool + 'a;

/// Ask every question. `block` runs async cloud calls from inside the prompts.
pub fn ask<'a>(
    provider: Provider,
    groups: &[ReplicationGroup],
    keys: &[KmsKey],
    cloud: &'a dyn CloudRead,
    block: &BlockingCheck<'a>,
    out: Option<PathBuf>,
) -> Result<Answers> {
    let source = ask_source(groups)?;
    let target = ask_target_id(groups, source)?;
    let (node_type, replicas) = ask_shape(source)?;
    let kms_key_id = ask_kms_key(provider, keys, cloud, block)?;
    let token = ask_token(&target)?;
    let stream_copy = ask_stream_copy()?;
    let cutover_alias = ask_cutover(provider, source)?;
    let delete_source = ask_delete_source(source)?;
    let (name, out) = ask_plan_file(source, out)?;
    Ok(Answers {
        provider,
        name,
        source: source.id.clone(),
        target,
        node_type,
        replicas,
        kms_key_id,
        generate_token: token.generate,
        show_token: token.show,
        store: token.store,
        stream_copy,
        cutover_alias,
        delete_source,
        out,
    })
}

/// The group to migrate: unencrypted ones first, each with its audit verdict.
fn ask_source(groups: &[ReplicationGroup]) -> Result<&ReplicationGroup> {
    if groups.is_empty() {
        return Err(Error::failed(
            "there are no replication groups to migrate",
            "on the sandbox: `ecmigrate sandbox up --keys 10000` first",
        ));
    }
    let mut sorted: Vec<&ReplicationGroup> = groups.iter().collect();
    sorted.sort_by(|a, b| (a.fully_encrypted(), &a.id).cmp(&(b.fully_encrypted(), &b.id)));
    let items: Vec<String> = sorted
        .iter()
        .map(|g| {
            let a = crate::eligibility::assess(g).recommended_path;
            format!(
                "{:<28} {:<10} at-rest={:<5} transit={:<5} auth={:<5} {}",
                g.id,
                g.status,
                g.at_rest_encryption_enabled,
                g.transit_encryption_enabled,
                g.auth_token_enabled,
                a
            )
        })
        .collect();
    let pick = Select::new()
        .with_prompt("Which replication group should be migrated?")
        .items(&items)
        .default(0)
        .interact()
        .map_err(prompt_error)?;
    let source = sorted[pick];
    if source.fully_encrypted() {
        return Err(Error::failed(
            format!(
                "`{}` is already encrypted at rest and in transit",
                source.id
            ),
            "nothing to migrate",
        ));
    }
    Ok(source)
}

/// The new group's id: valid, and not one that exists (ids are compared as AWS stores them, in lower case).
fn ask_target_id(groups: &[ReplicationGroup], source: &ReplicationGroup) -> Result<String> {
    let taken: Vec<String> = groups.iter().map(|g| g.id.to_lowercase()).collect();
    Input::new()
        .with_prompt("Target replication group id (the new, encrypted group)")
        .default(format!("{}-enc", source.id))
        .validate_with(|v: &String| -> std::result::Result<(), String> {
            rules::check_group_id(v)?;
            if taken.contains(&v.to_lowercase()) {
                return Err(format!("`{v}` already exists"));
            }
            Ok(())
        })
        .interact_text()
        .map_err(prompt_error)
}

/// Node type and replicas per node group, each `None` when the answer is the source's.
fn ask_shape(source: &ReplicationGroup) -> Result<(Option<String>, Option<u32>)> {
    say(&format!(
        "The target copies the source's shape: node type {}, {} node group(s) of {} node(s), engine {} {}.",
        source.cache_node_type,
        source.num_node_groups,
        source.nodes_per_node_group,
        source.engine,
        source.engine_version
    ));
    let node_type: String = Input::new()
        .with_prompt("Node type")
        .default(source.cache_node_type.clone())
        .validate_with(|v: &String| -> std::result::Result<(), String> {
            if v == &source.cache_node_type {
                Ok(())
            } else {
                rules::check_cache_node_type(v)
            }
        })
        .interact_text()
        .map_err(prompt_error)?;
    let source_replicas = source.nodes_per_node_group.saturating_sub(1);
    let replicas: u32 = Input::new()
        .with_prompt("Replicas per node group (0-5)")
        .default(source_replicas)
        .validate_with(|v: &u32| -> std::result::Result<(), String> {
            rules::check_range((*v).into(), 0, 5)
        })
        .interact_text()
        .map_err(prompt_error)?;
    Ok((
        (node_type != source.cache_node_type).then_some(node_type),
        (replicas != source_replicas).then_some(replicas),
    ))
}

/// KMS key: the account's customer managed keys, the service default (sandbox only: on AWS the
/// snapshots of an unencrypted group need a named key), or a pasted id validated on the spot.
/// `None` = the service-managed key.
fn ask_kms_key<'a>(
    provider: Provider,
    keys: &[KmsKey],
    cloud: &'a dyn CloudRead,
    block: &BlockingCheck<'a>,
) -> Result<Option<String>> {
    let mut key_items: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{} ({}, {})",
                k.aliases.first().cloned().unwrap_or(k.key_id.clone()),
                k.key_state,
                k.key_id
            )
        })
        .collect();
    let default_key = cloud
        .default_kms_key()
        .filter(|_| provider == Provider::Sandbox);
    if let Some(d) = &default_key {
        key_items.push(format!("the service-managed key ({d})"));
    }
    key_items.push("paste a key id, ARN or alias/NAME…".into());
    let key_pick = Select::new()
        .with_prompt("KMS key for at-rest encryption (and the snapshots)")
        .items(&key_items)
        .default(0)
        .interact()
        .map_err(prompt_error)?;
    if key_pick < keys.len() {
        let k = &keys[key_pick];
        Ok(Some(k.aliases.first().cloned().unwrap_or(k.arn.clone())))
    } else if default_key.is_some() && key_pick == keys.len() {
        Ok(None)
    } else {
        ask_pasted_kms_key(cloud, block).map(Some)
    }
}

/// A key id, ARN or alias typed in, accepted once the cloud says it is usable.
fn ask_pasted_kms_key<'a>(cloud: &'a dyn CloudRead, block: &BlockingCheck<'a>) -> Result<String> {
    Input::new()
        .with_prompt("KMS key id, ARN or alias/NAME")
        .validate_with(|v: &String| -> std::result::Result<(), String> {
            rules::check_kms_key_id(v)?;
            let id = v.clone();
            let usable = block(Box::pin(async move {
                matches!(cloud.describe_key(&id).await, Ok(Some(k)) if k.usable_for_elasticache().is_ok())
            }));
            if usable { Ok(()) } else { Err(format!("`{v}` does not exist or is not an enabled symmetric ENCRYPT_DECRYPT key")) }
        })
        .interact_text()
        .map_err(prompt_error)
}

/// What the AUTH token questions decided.
struct TokenAnswers {
    generate: bool,
    store: TokenChoice,
    show: bool,
}

/// Generate a token or use one that exists, where it is kept, and whether to show a generated one.
fn ask_token(target: &str) -> Result<TokenAnswers> {
    let generate = Select::new()
        .with_prompt("AUTH token")
        .items(["generate a new token", "use a token that already exists"])
        .default(0)
        .interact()
        .map_err(prompt_error)?
        == 0;
    let store = ask_token_store(generate, target)?;
    let show = generate
        && matches!(store, TokenChoice::File(_))
        && Confirm::new()
            .with_prompt("Show the generated token once, now? (it stays in the file either way)")
            .default(false)
            .interact()
            .map_err(prompt_error)?;
    Ok(TokenAnswers {
        generate,
        store,
        show,
    })
}

/// The token's store; an environment variable only for a token that exists (ecmigrate cannot set one).
fn ask_token_store(generate: bool, target: &str) -> Result<TokenChoice> {
    let mut stores = vec!["a file on this machine (mode 0600)", "AWS Secrets Manager"];
    if !generate {
        stores.push("an environment variable");
    }
    let store_pick = Select::new()
        .with_prompt("Where is the token kept?")
        .items(&stores)
        .default(0)
        .interact()
        .map_err(prompt_error)?;
    Ok(match store_pick {
        0 => TokenChoice::File(
            Input::new()
                .with_prompt("Token file (relative to the plan's folder)")
                .default(format!("secrets/{target}.token"))
                .interact_text()
                .map_err(prompt_error)?,
        ),
        1 => TokenChoice::SecretsManager(
            Input::new()
                .with_prompt("Secrets Manager secret name")
                .default(format!("ecmigrate/{target}/auth-token"))
                .validate_with(|v: &String| rules::check_secret_id(v))
                .interact_text()
                .map_err(prompt_error)?,
        ),
        _ => TokenChoice::Env(
            Input::new()
                .with_prompt("Environment variable holding the token")
                .validate_with(|v: &String| rules::check_env_name(v))
                .interact_text()
                .map_err(prompt_error)?,
        ),
    })
}

fn ask_stream_copy() -> Result<bool> {
    say("Without streaming copy, every write made to the source after the snapshot is lost.");
    Confirm::new()
        .with_prompt(
            "Copy the writes made after the snapshot (stream_copy, needs keyspace notifications)?",
        )
        .default(true)
        .interact()
        .map_err(prompt_error)
}

/// The sandbox alias to repoint, or `None` for a manual cutover (the only strategy the wizard offers
/// on AWS; the others need details better edited into the plan).
fn ask_cutover(provider: Provider, source: &ReplicationGroup) -> Result<Option<String>> {
    let alias = if provider == Provider::Sandbox {
        let sandbox_alias = Select::new()
            .with_prompt("Cutover")
            .items([
                "repoint a sandbox endpoint alias",
                "manual: print what to change and wait for my confirmation",
            ])
            .default(0)
            .interact()
            .map_err(prompt_error)?
            == 0;
        if sandbox_alias {
            Some(
                Input::new()
                    .with_prompt("Alias to repoint")
                    .default(format!("{}-endpoint", source.id))
                    .validate_with(|v: &String| rules::check_alias(v))
                    .interact_text()
                    .map_err(prompt_error)?,
            )
        } else {
            None
        }
    } else {
        say(
            "Cutover: manual (print what to change, wait for confirmation). For a Route53 CNAME or your own switch command, edit the plan: `strategy: route53` (hosted_zone_id, record_name) or `strategy: command`.",
        );
        None
    };
    say(
        "The cutover switches as soon as it is reached; to hold it until you run `ecmigrate cutover PLAN`, add `postpone: true` to the cutover step.",
    );
    Ok(alias)
}

fn ask_delete_source(source: &ReplicationGroup) -> Result<bool> {
    Confirm::new()
        .with_prompt(format!(
            "Delete `{}` at the end (after cutover and a passed verify; an encrypted final snapshot is kept)?",
            source.id
        ))
        .default(false)
        .interact()
        .map_err(prompt_error)
}

/// The plan's name and the file it is written to, which must not exist yet.
fn ask_plan_file(source: &ReplicationGroup, out: Option<PathBuf>) -> Result<(String, PathBuf)> {
    let name: String = Input::new()
        .with_prompt("Plan name (its state folder)")
        .default(source.id.clone())
        .validate_with(|v: &String| rules::check_plan_name(v))
        .interact_text()
        .map_err(prompt_error)?;
    let out: String = Input::new()
        .with_prompt("Write the plan to")
        .default(
            out.map(|p| p.display().to_string())
                .unwrap_or(format!("plans/{name}.yaml")),
        )
        .validate_with(|v: &String| -> std::result::Result<(), String> {
            if Path::new(v).exists() {
                Err(format!("{v} exists; choose another file"))
            } else {
                Ok(())
            }
        })
        .interact_text()
        .map_err(prompt_error)?;
    Ok((name, PathBuf::from(out)))
}

/// The plan as commented YAML.
pub fn render(a: &Answers) -> String {
    let mut y = String::new();
    y.push_str(&format!(
        "# Written by `ecmigrate wizard`. Rehearse: ecmigrate run {out} --dry-run\n# Run:      ecmigrate run {out}\nversion: 1\n# State lives in <state-dir>/{name}/.\nname: {name}\nprovider: {provider}\nsource:\n  replication_group_id: {source}\ntarget:\n  replication_group_id: {target}\n",
        out = a.out.display(),
        name = a.name,
        provider = a.provider.as_str(),
        source = a.source,
        target = a.target,
    ));
    match &a.kms_key_id {
        Some(k) => y.push_str(&format!(
            "  # Encrypts the group at rest and both snapshots.\n  kms_key_id: {k}\n"
        )),
        None => y.push_str("  # No kms_key_id: the service-managed key.\n"),
    }
    y.push_str("  # Only TLS connections are accepted.\n  transit_encryption_mode: required\n");
    let store = match &a.store {
        TokenChoice::File(f) => format!("file: {f}"),
        TokenChoice::Env(e) => format!("env: {e}"),
        TokenChoice::SecretsManager(s) => format!("secrets_manager: {s}"),
    };
    y.push_str("  # The plan never holds the token, only where it is kept.\n");
    if a.generate_token {
        y.push_str(&format!("  auth_token: {{ generate: true, {store} }}\n"));
    } else {
        y.push_str(&format!("  auth_token: {{ {store} }}\n"));
    }
    if let Some(t) = &a.node_type {
        y.push_str(&format!("  cache_node_type: {t}\n"));
    }
    if let Some(r) = a.replicas {
        y.push_str(&format!("  replicas_per_node_group: {r}\n"));
    }
    y.push_str("steps:\n  # Every check, before anything changes.\n  - kind: preflight\n  # A snapshot of the source, encrypted with the target's key.\n  - kind: backup\n  # The new group from that snapshot: at rest with KMS, TLS + AUTH in transit.\n  - kind: restore_encrypted\n");
    if a.stream_copy {
        y.push_str("  # Replay the writes made since before the snapshot; tail until cutover.\n  - kind: stream_copy\n");
    }
    y.push_str(
        "  # Every key compared by type, value and TTL.\n  - kind: verify\n    full: true\n",
    );
    match &a.cutover_alias {
        Some(alias) => y.push_str(&format!("  - kind: cutover\n    strategy: sandbox_alias\n    alias: {alias}\n")),
        None => y.push_str("  # Prints what to change and waits for your confirmation (or --yes).\n  - kind: cutover\n    strategy: manual\n"),
    }
    if a.delete_source {
        y.push_str(&format!(
            "  # A final snapshot encrypted with the target's key, then the source is deleted.\n  - kind: delete_source\n    confirm: {}\n",
            a.source
        ));
    }
    y
}
