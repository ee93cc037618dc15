//! Every fixture under tests/plans/invalid is refused with exit 2 by `plan validate` and by `run`, the error
//! starting `<file>:<line>: `<field>`` at the line that holds the mistake; one test per fixture, and the
//! sandbox left exactly as it was by all of them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::harness::{Env, Run};

/// One test per fixture: `name: file, line, field` — the line and field the error must start with.
macro_rules! invalid_plans {
    ($($test:ident: $file:literal, $line:literal, $field:literal;)+) => {
        /// (file, line, field) of every fixture.
        const CASES: &[(&str, u32, &str)] = &[$(($file, $line, $field)),+];

        $(
            #[test]
            fn $test() {
                refused_where_it_says($file, $line, $field);
            }
        )+
    };
}

invalid_plans! {
    fixture_01_bad_group_id_char: "01-bad-group-id-char.yaml", 9, "target.replication_group_id";
    fixture_02_double_hyphen_id: "02-double-hyphen-id.yaml", 9, "target.replication_group_id";
    fixture_03_trailing_hyphen_id: "03-trailing-hyphen-id.yaml", 6, "source.replication_group_id";
    fixture_04_id_too_long: "04-id-too-long.yaml", 9, "target.replication_group_id";
    fixture_05_same_source_and_target: "05-same-source-and-target.yaml", 9, "target.replication_group_id";
    fixture_06_unknown_top_level_field: "06-unknown-top-level-field.yaml", 4, "owner";
    fixture_07_unknown_step_field: "07-unknown-step-field.yaml", 17, "steps[1].snapshot";
    fixture_08_wrong_version: "08-wrong-version.yaml", 2, "version";
    fixture_09_name_path_trick: "09-name-path-trick.yaml", 3, "name";
    fixture_10_generate_without_file: "10-generate-without-file.yaml", 12, "target.auth_token.generate";
    fixture_11_token_file_and_env: "11-token-file-and-env.yaml", 12, "target.auth_token.env";
    fixture_12_bad_env_name: "12-bad-env-name.yaml", 12, "target.auth_token.env";
    fixture_13_endpoint_without_port: "13-endpoint-without-port.yaml", 7, "source.data_endpoint";
    fixture_14_endpoint_port_out_of_range: "14-endpoint-port-out-of-range.yaml", 13, "target.data_endpoint";
    fixture_15_kms_key_malformed: "15-kms-key-malformed.yaml", 10, "target.kms_key_id";
    fixture_16_steps_out_of_order: "16-steps-out-of-order.yaml", 17, "steps[2].kind";
    fixture_17_duplicate_step: "17-duplicate-step.yaml", 21, "steps[5].kind";
    fixture_18_missing_restore_encrypted: "18-missing-restore-encrypted.yaml", 14, "steps";
    fixture_19_delete_source_without_cutover: "19-delete-source-without-cutover.yaml", 21, "steps[5].kind";
    fixture_20_confirm_mismatch: "20-confirm-mismatch.yaml", 25, "steps[6].confirm";
    fixture_21_sample_with_full: "21-sample-with-full.yaml", 20, "steps[4].sample";
    fixture_22_sample_out_of_range: "22-sample-out-of-range.yaml", 20, "steps[4].sample";
    fixture_23_sandbox_alias_without_alias: "23-sandbox-alias-without-alias.yaml", 21, "steps[5].alias";
    fixture_24_aws_block_with_sandbox: "24-aws-block-with-sandbox.yaml", 5, "aws";
    fixture_25_num_cache_clusters_7: "25-num-cache-clusters-7.yaml", 13, "target.num_cache_clusters";
    fixture_26_replicas_6: "26-replicas-6.yaml", 13, "target.replicas_per_node_group";
    fixture_27_bad_cache_node_type: "27-bad-cache-node-type.yaml", 13, "target.cache_node_type";
    fixture_28_yaml_syntax_error: "28-yaml-syntax-error.yaml", 12, "target.auth_token";
    fixture_29_auth_token_literal_value: "29-auth-token-literal-value.yaml", 12, "target.auth_token.value";
    fixture_30_route53_with_sandbox: "30-route53-with-sandbox.yaml", 22, "steps[5].strategy";
    fixture_31_alias_with_manual: "31-alias-with-manual.yaml", 23, "steps[5].alias";
    fixture_32_bad_security_group: "32-bad-security-group.yaml", 13, "target.security_group_ids[1]";
    fixture_33_tag_key_aws_prefix: "33-tag-key-aws-prefix.yaml", 15, "target.tags.aws:owner";
    fixture_34_snapshot_names_equal: "34-snapshot-names-equal.yaml", 26, "steps[6].final_snapshot_name";
    fixture_35_timeout_too_short: "35-timeout-too-short.yaml", 17, "steps[1].timeout_seconds";
    fixture_36_ttl_tolerance_too_large: "36-ttl-tolerance-too-large.yaml", 21, "steps[4].ttl_tolerance_ms";
    fixture_37_bad_region: "37-bad-region.yaml", 5, "aws.region";
    fixture_38_both_cluster_counts: "38-both-cluster-counts.yaml", 14, "target.num_node_groups";
    fixture_39_missing_auth_token: "39-missing-auth-token.yaml", 8, "target.auth_token";
    fixture_40_unknown_step_kind: "40-unknown-step-kind.yaml", 16, "steps[1].kind";
    fixture_41_timeout_not_a_number: "41-timeout-not-a-number.yaml", 18, "steps[2].timeout_seconds";
    fixture_42_empty_token_file: "42-empty-token-file.yaml", 12, "target.auth_token.file";
    fixture_43_bad_snapshot_name: "43-bad-snapshot-name.yaml", 17, "steps[1].snapshot_name";
    fixture_44_alias_bad_chars: "44-alias-bad-chars.yaml", 23, "steps[5].alias";
    fixture_45_kms_alias_aws_reserved: "45-kms-alias-aws-reserved.yaml", 10, "target.kms_key_id";
    fixture_46_delete_source_without_verify: "46-delete-source-without-verify.yaml", 22, "steps[5].kind";
    fixture_47_port_zero: "47-port-zero.yaml", 13, "target.port";
    fixture_48_no_steps: "48-no-steps.yaml", 14, "steps";
    fixture_49_sandbox_alias_with_aws: "49-sandbox-alias-with-aws.yaml", 22, "steps[5].strategy";
    fixture_50_bad_transit_mode: "50-bad-transit-mode.yaml", 11, "target.transit_encryption_mode";
    fixture_51_cutover_before_verify: "51-cutover-before-verify.yaml", 22, "steps[5].kind";
    fixture_52_token_file_and_secrets_manager: "52-token-file-and-secrets-manager.yaml", 12, "target.auth_token.secrets_manager";
    fixture_53_bad_secret_name: "53-bad-secret-name.yaml", 12, "target.auth_token.secrets_manager";
    fixture_54_generate_into_env: "54-generate-into-env.yaml", 12, "target.auth_token.generate";
    fixture_55_drain_timeout_too_long: "55-drain-timeout-too-long.yaml", 26, "steps[6].drain_timeout_seconds";
    fixture_56_route53_without_record_name: "56-route53-without-record-name.yaml", 21, "steps[5].record_name";
    fixture_57_route53_bad_zone_id: "57-route53-bad-zone-id.yaml", 23, "steps[5].hosted_zone_id";
    fixture_58_command_without_command: "58-command-without-command.yaml", 21, "steps[5].command";
    fixture_59_write_pause_too_long: "59-write-pause-too-long.yaml", 23, "steps[5].max_write_pause_ms";
    fixture_60_command_with_manual: "60-command-with-manual.yaml", 23, "steps[5].command";
    fixture_61_fence_attempts_zero: "61-fence-attempts-zero.yaml", 23, "steps[5].fence_attempts";
    fixture_62_kms_key_of_another_region: "62-kms-key-of-another-region.yaml", 10, "target.kms_key_id";
    fixture_63_kms_key_in_govcloud: "63-kms-key-in-govcloud.yaml", 10, "target.kms_key_id";
    fixture_64_in_place_with_backup: "64-in-place-with-backup.yaml", 10, "steps[2].kind";
    fixture_65_enable_transit_with_target: "65-enable-transit-with-target.yaml", 12, "steps[1].kind";
    fixture_66_source_ca_with_target: "66-source-ca-with-target.yaml", 7, "source.tls_ca_file";
    fixture_67_rbac_and_auth_token: "67-rbac-and-auth-token.yaml", 10, "target.auth";
    fixture_68_rbac_user_id_default: "68-rbac-user-id-default.yaml", 14, "target.auth.rbac.users[0].user_id";
    fixture_69_rbac_without_default_user: "69-rbac-without-default-user.yaml", 13, "target.auth.rbac.users";
    fixture_70_rbac_password_in_access_string: "70-rbac-password-in-access-string.yaml", 20, "target.auth.rbac.users[1].access_string";
    fixture_71_rbac_unknown_data_plane_user: "71-rbac-unknown-data-plane-user.yaml", 12, "target.auth.rbac.data_plane_user";
    fixture_72_rbac_bad_user_group_id: "72-rbac-bad-user-group-id.yaml", 11, "target.auth.rbac.user_group_id";
    fixture_73_rbac_duplicate_user_id: "73-rbac-duplicate-user-id.yaml", 22, "target.auth.rbac.users[2].user_id";
    fixture_74_seal_too_long: "74-seal-too-long.yaml", 23, "steps[5].seal_source_hours";
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/plans/invalid")
}

/// `file` copied into the env's folder, so the error names it by its bare name (and a plan that were not
/// refused would write into the temp folder, not the fixtures).
fn copy_into(env: &Env, file: &str) -> PathBuf {
    let text = std::fs::read_to_string(fixture_dir().join(file)).unwrap();
    env.write_plan(file, &text)
}

/// The first line of the error list (`error: the plan is invalid:` then one indented line per error).
fn first_error(run: &Run) -> &str {
    let mut lines = run.stderr.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error: {run:?}"));
    lines.next().map(str::trim).unwrap_or_default()
}

/// Exit 2, the first error starts with `<file>:<line>: `<field>`:`, and a hint follows.
fn assert_refused_at(run: &Run, args: &[&str], file: &str, line: u32, field: &str) {
    assert_eq!(run.code, 2, "{args:?}: {run:?}");
    let prefix = format!("{file}:{line}: `{field}`:");
    assert!(
        first_error(run).starts_with(&prefix),
        "{args:?}: the error does not start with `{prefix}`: {run:?}"
    );
    assert!(run.stderr.contains("hint:"), "{run:?}");
}

/// `file` names `field` in its `# expect-field:` header, and `plan validate`, `run --yes` and `run
/// --dry-run` all refuse it at `line`.
fn refused_where_it_says(file: &str, line: u32, field: &str) {
    let text = std::fs::read_to_string(fixture_dir().join(file)).unwrap();
    assert_eq!(
        text.lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect-field:"))
            .map(str::trim),
        Some(field),
        "{file}: its `# expect-field:` header disagrees with this test"
    );
    let env = Env::new();
    let plan = copy_into(&env, file);
    assert_eq!(plan.parent(), Some(env.path()));
    for args in [
        ["plan", "validate", file].as_slice(),
        &["run", file, "--yes"],
        &["run", file, "--dry-run"],
    ] {
        assert_refused_at(&env.run(args), args, file, line, field);
    }
    assert!(!env.state_dir().exists(), "{file} left state behind");
}

#[test]
fn every_invalid_fixture_has_its_test() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixture_dir())
        .expect("fixtures")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let tested: BTreeSet<String> = CASES.iter().map(|c| c.0.to_string()).collect();
    assert_eq!(on_disk, tested, "fixtures and tests differ");
    assert!(
        on_disk.len() >= 20,
        "only {} invalid fixtures",
        on_disk.len()
    );
}

fn sandbox_files(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    env.sandbox_files()
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap_or_default()))
        .collect()
}

fn is_log(p: &Path) -> bool {
    p.to_string_lossy().ends_with(".log")
}

#[test]
fn no_invalid_plan_changes_the_sandbox_or_leaves_state() {
    let env = Env::new();
    env.sandbox_with_source(20);
    let before = sandbox_files(&env);
    let status_before = env.sandbox_status();
    for (file, line, field) in CASES {
        copy_into(&env, file);
        for args in [["run", file, "--yes"], ["run", file, "--dry-run"]] {
            assert_refused_at(&env.run(&args), &args, file, *line, field);
        }
    }
    let after = sandbox_files(&env);
    assert_eq!(before.len(), after.len());
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.0 == b.0 && (is_log(&a.0) || a.1 == b.1))
    );
    assert_eq!(env.sandbox_status(), status_before);
    assert!(
        !env.state_dir().exists(),
        "an invalid plan left state behind"
    );
}

#[test]
fn the_valid_fixtures_and_the_demo_plan_validate() {
    let env = Env::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for p in [
        "tests/plans/valid/full.yaml",
        "tests/plans/valid/minimal.yaml",
        "tests/plans/valid/rbac.yaml",
        "plans/sandbox-demo.yaml",
    ] {
        let r = env.run(&["plan", "validate", root.join(p).to_str().unwrap()]);
        assert_eq!(r.code, 0, "{p}: {r:?}");
    }
    let schema = env.ok(&["plan", "schema"]);
    let v: serde_json::Value = serde_json::from_str(&schema.stdout).expect("schema is JSON");
    let text = v.to_string();
    for kind in ecmigrate::plan::StepKind::ALL.map(|k| k.as_str()) {
        assert!(text.contains(kind), "schema lacks {kind}");
    }
}
