//! Plan loading and validation: fixtures under `tests/plans/` and edge cases of each rule.

use std::path::{Path, PathBuf};

use super::rules::*;
use super::*;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/plans")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn issues_of(path: &Path) -> Vec<PlanIssue> {
    match load(path) {
        Ok(_) => panic!("{} should be refused", path.display()),
        Err(Error::InvalidPlan { issues }) => issues,
        Err(other) => panic!("{}: unexpected error {other}", path.display()),
    }
}

fn issues_in(text: &str) -> Vec<PlanIssue> {
    match parse_str(text, "plan.yaml") {
        Ok(_) => panic!("should be refused:\n{text}"),
        Err(Error::InvalidPlan { issues }) => issues,
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// The key a field path ends with: `steps[2].alias` → `alias`, `target.security_group_ids[1]` →
/// `security_group_ids`, `steps` → `steps`.
fn last_key(field: &str) -> &str {
    let trimmed = field
        .trim_end_matches(|c: char| c == ']' || c.is_ascii_digit())
        .trim_end_matches('[');
    let trimmed = if trimmed.ends_with(']') {
        field
    } else {
        trimmed
    };
    trimmed.rsplit(['.', ']']).next().unwrap_or(trimmed)
}

#[test]
fn every_invalid_fixture_is_refused_naming_its_field_and_line() {
    let files = fixtures("invalid");
    assert!(files.len() >= 24, "only {} invalid fixtures", files.len());
    let mut fields = std::collections::HashSet::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect-field: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be `# expect-field: FIELD`",
                    path.display()
                )
            })
            .trim()
            .to_string();
        let issues = issues_of(path);
        let shown = issues
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        println!("{shown}");
        assert_eq!(
            issues.len(),
            1,
            "{}: exactly one thing is wrong, yet:\n{shown}",
            path.display()
        );
        let issue = &issues[0];
        assert!(
            issue.field == expect || issue.field.starts_with(&format!("{expect}.")),
            "{}: expected field `{expect}`, got:\n{shown}",
            path.display()
        );
        assert_eq!(issue.file, path.display().to_string());
        let line = issue
            .line
            .unwrap_or_else(|| panic!("{}: no line in {shown}", path.display()));
        assert!(
            line >= 2 && line <= text.lines().count(),
            "{}: line {line} out of the file",
            path.display()
        );
        // Where the field is written, the line must be the one holding its key.
        let key = format!("{}:", last_key(&issue.field));
        if text.lines().skip(1).any(|l| l.contains(&key)) {
            assert!(
                text.lines().nth(line - 1).unwrap().contains(&key),
                "{}: line {line} does not hold `{key}`: {shown}",
                path.display()
            );
        }
        assert!(
            !issue.rule.is_empty() && issue.rule.chars().next().unwrap().is_lowercase()
                || issue.rule.starts_with('`'),
            "{shown}"
        );
        fields.insert(path.file_name().unwrap().to_owned());
    }
    assert_eq!(fields.len(), files.len());
}

#[test]
fn valid_fixtures_load() {
    let files = fixtures("valid");
    assert!(files.len() >= 2);
    for path in files {
        let loaded = load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(loaded.plan.version, 1);
        assert_eq!(loaded.plan.source.replication_group_id, "orders");
        assert_eq!(loaded.dir, path.parent().unwrap());
    }
}

#[test]
fn full_fixture_has_every_step_and_resolves_paths_against_its_folder() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans/valid/full.yaml");
    let loaded = load(&path).unwrap();
    let kinds: Vec<StepKind> = loaded.plan.steps.iter().map(StepSpec::kind).collect();
    assert_eq!(
        kinds,
        [
            StepKind::Preflight,
            StepKind::Backup,
            StepKind::RestoreEncrypted,
            StepKind::StreamCopy,
            StepKind::Verify,
            StepKind::Cutover,
            StepKind::DeleteSource
        ]
    );
    let token = loaded
        .plan
        .target()
        .auth_token
        .as_ref()
        .unwrap()
        .file
        .clone()
        .unwrap();
    assert_eq!(
        loaded.resolve(&token),
        path.parent().unwrap().join("secrets/orders.token")
    );
    assert_eq!(
        loaded.resolve(Path::new("/abs/ca.pem")),
        PathBuf::from("/abs/ca.pem")
    );
    assert_eq!(loaded.plan.provider, Provider::Sandbox);
}

#[test]
fn missing_file_is_an_invalid_plan() {
    let issues = match load(Path::new("/nonexistent/plan.yaml")) {
        Err(Error::InvalidPlan { issues }) => issues,
        other => panic!("{other:?}"),
    };
    assert_eq!(issues[0].field, "(file)");
}

const GOOD: &str = "version: 1
name: orders
source:
  replication_group_id: orders
target:
  replication_group_id: orders-enc
  auth_token: { env: TOKEN }
steps:
  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
";

#[test]
fn relative_plan_path_has_dot_as_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let loaded = load(&file).unwrap();
    assert_eq!(loaded.dir, dir.path());
    assert_eq!(
        loaded.resolve(Path::new("t.token")),
        dir.path().join("t.token")
    );
}

#[test]
fn every_issue_is_reported_not_just_the_first() {
    let text = GOOD
        .replace("version: 1", "version: 3")
        .replace("name: orders", "name: .hidden")
        .replace("orders-enc", "orders-enc-")
        .replace("env: TOKEN", "env: 9TOKEN")
        .replace("  - kind: backup\n", "");
    let issues = issues_in(&text);
    let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "version",
            "name",
            "target.replication_group_id",
            "target.auth_token.env",
            "steps"
        ],
        "{issues:#?}"
    );
    let lines: Vec<Option<usize>> = issues.iter().map(|i| i.line).collect();
    assert_eq!(lines, [Some(1), Some(2), Some(6), Some(7), Some(8)]);
    assert!(
        issues[4].rule.contains("`backup` step is required"),
        "{}",
        issues[4].rule
    );
}

#[test]
fn step_order_messages_name_the_rule() {
    let text = GOOD.replace(
        "  - kind: preflight\n  - kind: backup\n  - kind: restore_encrypted\n",
        "  - kind: preflight\n  - kind: restore_encrypted\n  - kind: backup\n  - kind: verify\n  - kind: verify\n",
    );
    let issues = issues_in(&text);
    let rules: Vec<(&str, &str)> = issues
        .iter()
        .map(|i| (i.field.as_str(), i.rule.as_str()))
        .collect();
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert_eq!(rules[0].0, "steps[2].kind");
    assert!(
        rules[0]
            .1
            .starts_with("`backup` must come before `restore_encrypted`"),
        "{}",
        rules[0].1
    );
    assert_eq!(issues[0].line, Some(11));
    assert_eq!(rules[1].0, "steps[4].kind");
    assert!(
        rules[1].1.starts_with("`verify` appears twice"),
        "{}",
        rules[1].1
    );
    assert_eq!(issues[1].line, Some(13));
}

#[test]
fn missing_field_points_at_its_parent() {
    let text = GOOD.replace("  replication_group_id: orders-enc\n", "");
    let issues = issues_in(&text);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].field, "target.replication_group_id");
    assert_eq!(issues[0].line, Some(5));
    assert!(issues[0].rule.contains("missing"), "{}", issues[0].rule);
}

#[test]
fn unknown_fields_and_wrong_types_do_not_echo_values() {
    let secret = "s3cr3t-t0ken-value-1234567890";
    for text in [
        GOOD.replace("{ env: TOKEN }", &format!("{{ value: {secret} }}")),
        GOOD.replace("{ env: TOKEN }", secret),
        GOOD.replace("name: orders", &format!("name: orders\npassword: {secret}")),
        GOOD.replace(
            "  - kind: backup\n",
            &format!("  - kind: backup\n    timeout_seconds: {secret}\n"),
        ),
        GOOD.replace("version: 1", &format!("version: {secret}")),
        GOOD.replace(
            "{ env: TOKEN }",
            &format!("{{ env: TOKEN, generate: {secret} }}"),
        ),
    ] {
        let issues = issues_in(&text);
        let shown = Error::InvalidPlan {
            issues: issues.clone(),
        }
        .to_string();
        assert!(!shown.contains(secret), "value echoed: {shown}");
        assert!(issues[0].line.is_some(), "{shown}");
    }
    let issues = issues_in(&GOOD.replace("{ env: TOKEN }", &format!("{{ value: \"{secret}\" }}")));
    assert_eq!(issues[0].field, "target.auth_token.value");
    assert!(
        issues[0].rule.contains("never holds the AUTH token"),
        "{}",
        issues[0].rule
    );
}

#[test]
fn type_errors_inside_steps_name_the_step_field() {
    let text = GOOD.replace(
        "  - kind: restore_encrypted\n",
        "  - kind: restore_encrypted\n    timeout_seconds: soon\n",
    );
    let issues = issues_in(&text);
    assert_eq!(issues[0].field, "steps[2].timeout_seconds");
    assert_eq!(issues[0].line, Some(12));
    assert!(
        issues[0].rule.contains("whole number"),
        "{}",
        issues[0].rule
    );
    let text = GOOD.replace(
        "  - kind: backup\n",
        "  - kind: cutover\n    strategy: manual\n    postpone: maybe\n  - kind: backup\n",
    );
    let issues = issues_in(&text);
    assert_eq!(issues[0].field, "steps[1].postpone");
}

#[test]
fn syntax_errors_carry_a_line() {
    let text = GOOD.replace("name: orders", "name: \"orders");
    let issues = issues_in(&text);
    assert_eq!(issues.len(), 1);
    assert!(issues[0].line.is_some(), "{issues:?}");
}

#[test]
fn schema_is_json_and_names_every_step_kind() {
    let schema: serde_json::Value = serde_json::from_str(&schema_json()).expect("valid JSON");
    let text = schema.to_string();
    for kind in StepKind::ALL.map(StepKind::as_str) {
        assert!(text.contains(&format!("\"{kind}\"")), "schema lacks {kind}");
    }
    assert!(text.contains("sandbox_alias") && text.contains("auth_token"));
}

#[test]
fn auth_token_length_bounds() {
    assert!(check_auth_token("").is_err());
    assert!(check_auth_token(&"a".repeat(15)).is_err());
    assert!(check_auth_token(&"a".repeat(16)).is_ok());
    assert!(check_auth_token(&"a".repeat(128)).is_ok());
    let err = check_auth_token(&"a".repeat(129)).unwrap_err();
    assert!(
        err.contains("16 to 128") && err.contains("has 129"),
        "{err}"
    );
    // Characters, not bytes: 16 non-ASCII characters are long enough, then refused for what they are.
    let err = check_auth_token(&"é".repeat(16)).unwrap_err();
    assert!(err.contains("non-ASCII"), "{err}");
}

/// A token of 15 letters and `c`, and the rule's answer, checked never to repeat the token.
fn auth_token_with(c: char) -> Result<(), String> {
    let token = format!("Abcdefghijklmn0{c}");
    check_auth_token(&token)
        .inspect_err(|err| assert!(!err.contains(&token), "token echoed: {err}"))
}

#[test]
fn auth_token_special_characters_are_exactly_the_permitted_ones() {
    let specials = (0u8..=127)
        .map(char::from)
        .filter(|c| c.is_ascii_graphic() && !c.is_ascii_alphanumeric());
    let mut permitted = String::new();
    for c in specials {
        if "!&#$^<>-".contains(c) {
            assert!(auth_token_with(c).is_ok(), "`{c}` is permitted");
            permitted.push(c);
        } else {
            let err = auth_token_with(c).expect_err(&format!("`{c}` must be refused"));
            let named = if c == '`' {
                "a backtick".to_string()
            } else {
                format!("`{c}`")
            };
            assert!(err.contains(&format!("contains {named}")), "{c}: {err}");
        }
    }
    assert_eq!(permitted.len(), AUTH_TOKEN_SPECIALS.len());
    assert!(check_auth_token("Abcdefghijklmno!&#$^<>-0123456789").is_ok());
}

#[test]
fn auth_token_refuses_spaces_controls_and_non_ascii_by_class() {
    for (c, class) in [
        (' ', "a space"),
        ('\t', "a control character"),
        ('\u{7f}', "a control character"),
        ('é', "a non-ASCII character"),
        ('€', "a non-ASCII character"),
    ] {
        let err = auth_token_with(c).unwrap_err();
        assert!(err.contains(class), "{c:?}: {err}");
        if !c.is_ascii_whitespace() {
            assert!(!err.contains(c), "{c:?} echoed: {err}");
        }
    }
}

#[test]
fn tag_characters_and_count() {
    assert!(check_tag("team name", "a-b_c.d:e/f=g+h@i 0").is_ok());
    assert!(check_tag("k", "").is_ok());
    for bad in ['#', ',', '*', '"', '\'', 'é', '\n'] {
        let err = check_tag(&format!("k{bad}"), "v").unwrap_err();
        assert!(err.starts_with("a tag key may contain only"), "{err}");
        let err = check_tag("k", &format!("v{bad}")).unwrap_err();
        assert!(err.starts_with("a tag value may contain only"), "{err}");
    }
    assert!(check_tag("Aws:x", "v").unwrap_err().contains("`aws:`"));
    assert!(check_tag("x", "aws:y").is_ok());
    assert!(check_tag_count(MAX_TAGS).is_ok());
    assert_eq!(
        check_tag_count(MAX_TAGS + 1).unwrap_err(),
        "at most 50 tags are allowed (got 51)"
    );
}

#[test]
fn describe_char_names_a_backtick_in_words() {
    let err = check_group_id("a`b").unwrap_err();
    assert!(err.contains("(it contains a backtick)"), "{err}");
}

#[test]
fn group_id_edges() {
    let forty = format!("a{}", "b".repeat(39));
    assert!(check_group_id(&forty).is_ok());
    assert!(
        check_group_id(&format!("{forty}c"))
            .unwrap_err()
            .contains("got 41 characters")
    );
    assert!(check_group_id("").is_err());
    assert!(check_group_id("a").is_ok());
    assert!(check_group_id("1orders").is_err());
    assert!(check_group_id("-orders").is_err());
    assert!(check_group_id("orders--enc").unwrap_err().contains("`--`"));
    assert!(
        check_group_id("orders-")
            .unwrap_err()
            .contains("trailing hyphen")
    );
    assert!(check_group_id("orders_enc").unwrap_err().contains("`_`"));
    assert!(check_group_id("ordérs").is_err());
    assert!(check_group_id("Orders-Enc-2").is_ok());
}

#[test]
fn plan_name_edges() {
    for ok in [
        "orders",
        "o",
        "orders.v2_final-1",
        "0rders",
        &"a".repeat(64),
    ] {
        assert!(check_plan_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "a\\b",
        ".hidden",
        "-x",
        "_x",
        "a b",
        "ordérs",
        &"a".repeat(65),
    ] {
        assert!(check_plan_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn snapshot_name_edges() {
    assert!(check_snapshot_name(&format!("s{}", "a".repeat(254))).is_ok());
    assert!(check_snapshot_name(&format!("s{}", "a".repeat(255))).is_err());
    assert!(check_snapshot_name("snap--x").is_err());
    assert!(check_snapshot_name("snap-").is_err());
    assert!(check_snapshot_name("9snap").is_err());
}

#[test]
fn region_edges() {
    for ok in [
        "us-east-1",
        "eu-central-2",
        "us-gov-west-1",
        "ap-southeast-10",
    ] {
        assert!(check_region(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "us-east",
        "US-east-1",
        "use-east-1",
        "us-east-1a",
        "us--1",
        "us-gov-",
        "us-east-1-",
    ] {
        assert!(check_region(bad).is_err(), "{bad}");
    }
}

#[test]
fn endpoint_edges() {
    for ok in [
        "127.0.0.1:6379",
        "localhost:1",
        "h:65535",
        "[::1]:6379",
        "[2001:db8::1]:6380",
        "my-cache.abc.use1.cache.amazonaws.com:6379",
    ] {
        assert!(check_endpoint(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "localhost",
        ":6379",
        "h:0",
        "h:65536",
        "h:70000",
        "h:",
        "h:63x",
        "::1:6379",
        "[::1]6379",
        "[]:6379",
        "h :6379",
        "h:-1",
    ] {
        assert!(check_endpoint(bad).is_err(), "{bad}");
    }
}

#[test]
fn kms_key_edges() {
    for ok in [
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "mrk-1234abcd12ab34cd56ef1234567890ab",
        "alias/orders",
        "alias/team/orders_key-1",
        "alias/aws/elasticache",
        "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        "arn:aws:kms:eu-west-1:123456789012:alias/orders",
    ] {
        assert!(check_kms_key_id(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "orders",
        "1234abcd-12ab-34cd",
        "1234abcd-12ab-34cd-56ef-1234567890ag",
        "mrk-1234",
        "alias/",
        "alias/aws/s3",
        "alias/bad name",
        "arn:aws:kms:us-east-1:12345678901:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:s3:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:useast1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:us-east-1:123456789012:key/nope",
        "arn:azure:kms:us-east-1:123456789012:alias/x",
        "arn:aws:kms:us-east-1:123456789012",
    ] {
        assert!(check_kms_key_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn small_rule_edges() {
    assert!(check_env_name("_A1").is_ok());
    assert!(check_env_name("A-B").is_err());
    assert!(check_env_name("1A").is_err());
    assert!(check_env_name("").is_err());
    assert!(check_cache_node_type("cache.t4g.micro").is_ok());
    assert!(check_cache_node_type("cache.r7g.large.x").is_err());
    assert!(check_cache_node_type("cache.R7g.large").is_err());
    assert!(check_cache_node_type("cache..large").is_err());
    assert!(check_security_group_id("sg-01234567").is_ok());
    assert!(check_security_group_id("sg-0123456789abcdef0").is_ok());
    assert!(check_security_group_id("sg-0123456").is_err());
    assert!(check_security_group_id("sg-0123456789abcdef01").is_err());
    assert!(check_security_group_id("sg-0123456A").is_err());
    assert!(check_tag(&"k".repeat(128), &"v".repeat(256)).is_ok());
    assert!(check_tag(&"k".repeat(129), "v").is_err());
    assert!(check_tag("k", &"v".repeat(257)).is_err());
    assert!(check_tag("", "v").is_err());
    assert!(check_tag("aws:x", "v").is_err());
    assert!(check_tag("AWS:x", "v").is_err());
    assert!(check_alias("orders-endpoint").is_ok());
    assert!(check_alias(&format!("a{}", "b".repeat(62))).is_ok());
    assert!(check_alias(&format!("a{}", "b".repeat(63))).is_err());
    assert!(check_alias("Orders").is_err());
    assert!(check_alias("1orders").is_err());
    assert!(check_alias("").is_err());
    assert!(check_profile("").is_err());
    assert!(check_profile("prod").is_ok());
    assert!(
        check_range(0, 1, 6)
            .unwrap_err()
            .contains("from 1 to 6 (got 0)")
    );
}

#[test]
fn numeric_limits_in_plans() {
    let with = |extra: &str| {
        GOOD.replace(
            "  auth_token: { env: TOKEN }\n",
            &format!("  auth_token: {{ env: TOKEN }}\n{extra}"),
        )
    };
    assert!(parse_str(&with("  num_cache_clusters: 6\n  port: 1\n"), "p").is_ok());
    assert!(
        parse_str(
            &with("  num_node_groups: 500\n  replicas_per_node_group: 0\n"),
            "p"
        )
        .is_ok()
    );
    let issues = issues_in(&with(
        "  num_node_groups: 501\n  replicas_per_node_group: 6\n  num_cache_clusters: 0\n",
    ));
    let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "target.num_cache_clusters",
            "target.num_node_groups",
            "target.num_node_groups",
            "target.replicas_per_node_group"
        ]
    );
    let many: String = (0..51).map(|i| format!("    k{i}: v\n")).collect();
    let issues = issues_in(&with(&format!("  tags:\n{many}")));
    assert_eq!(issues[0].field, "target.tags");
    assert_eq!(issues[0].line, Some(8));
}

#[test]
fn auth_token_needs_a_place() {
    let issues = issues_in(&GOOD.replace("{ env: TOKEN }", "{}"));
    assert_eq!(issues[0].field, "target.auth_token");
    assert_eq!(issues[0].line, Some(7));
    let issues = issues_in(&GOOD.replace("{ env: TOKEN }", "{ generate: true }"));
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].field, "target.auth_token.generate");
}

#[test]
fn command_strategy_needs_its_command_and_route53_its_record() {
    let text = GOOD.replace(
        "  - kind: restore_encrypted\n",
        "  - kind: restore_encrypted\n  - kind: cutover\n    strategy: command\n",
    );
    let issues = issues_in(&text);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].field, "steps[3].command");
    assert!(issues[0].rule.contains("needs `command`"), "{issues:?}");
    let ok = text.replace(
        "    strategy: command\n",
        "    strategy: command\n    command: ./switch.sh\n",
    );
    assert!(parse_str(&ok, "plan.yaml").is_ok());

    let text = GOOD.replace(
        "  - kind: restore_encrypted\n",
        "  - kind: restore_encrypted\n  - kind: cutover\n    strategy: route53\n    hosted_zone_id: /hostedzone/Z0123456789ABC\n    record_name: orders\n",
    );
    let issues = issues_in(&text);
    let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
    assert!(fields.contains(&"steps[3].record_name"), "{issues:?}");
    assert!(
        issues.iter().any(|i| i.rule.contains("`NAME.ZONE`")),
        "{issues:?}"
    );
}

#[test]
fn odd_documents_are_refused_with_an_issue() {
    for text in [
        "",
        "[]",
        "- 1\n",
        "version: 1\n---\nversion: 1\n",
        "just text",
        "{",
        "\t- x",
    ] {
        let issues = issues_in(text);
        assert!(!issues.is_empty(), "{text:?}");
        assert!(!issues[0].rule.is_empty());
        println!("{text:?} => {}", issues[0]);
    }
}

#[test]
fn long_unknown_values_are_not_repeated() {
    let secret = "abcdefghijklmnopqrstu";
    let issues =
        issues_in(&GOOD.replace("name: orders", &format!("name: orders\nprovider: {secret}")));
    assert_eq!(issues[0].field, "provider");
    assert_eq!(issues[0].line, Some(3));
    assert!(!issues[0].rule.contains(secret), "{}", issues[0].rule);
    let issues = issues_in(&GOOD.replace("name: orders", "name: orders\nprovider: azure"));
    assert!(
        issues[0].rule.starts_with("unknown value `azure`"),
        "{}",
        issues[0].rule
    );
}

#[test]
fn secret_id_edges() {
    assert!(check_secret_id("orders/auth-token_1+=.@").is_ok());
    assert!(
        check_secret_id("arn:aws:secretsmanager:us-east-1:123456789012:secret:orders-AbCdEf")
            .is_ok()
    );
    assert!(check_secret_id("").is_err());
    assert!(check_secret_id(&"a".repeat(513)).is_err());
    assert!(check_secret_id("orders auth").is_err());
    assert!(check_secret_id("arn:aws:kms:us-east-1:123456789012:key/abc").is_err());
}

#[test]
fn a_client_certificate_comes_with_its_key() {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans/valid/minimal.yaml"),
    )
    .unwrap();
    let with = |source: &str, target: &str| {
        base.replacen("source:\n", &format!("source:\n{source}"), 1)
            .replacen("target:\n", &format!("target:\n{target}"), 1)
    };
    let issues = issues_in(&with(
        "  tls_client_cert: client.pem\n",
        "  tls_client_key: client.key\n",
    ));
    let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
    assert!(fields.contains(&"source.tls_client_key"), "{fields:?}");
    assert!(fields.contains(&"target.tls_client_cert"), "{fields:?}");
    let both = "  tls_client_cert: client.pem\n  tls_client_key: client.key\n";
    parse_str(&with(both, both), "plan.yaml").expect("a certificate with its key is valid");
}

#[test]
fn a_key_must_be_offered_and_live_in_the_plans_region() {
    assert!(check_key_in_region("alias/cache", "eu-west-1").is_ok());
    assert!(
        check_key_in_region(
            "arn:aws:kms:eu-west-1:123456789012:key/0123abcd-0000-0000-0000-000000000000",
            "eu-west-1"
        )
        .is_ok()
    );
    let other = check_key_in_region(
        "arn:aws:kms:us-east-1:123456789012:key/0123abcd-0000-0000-0000-000000000000",
        "eu-west-1",
    )
    .unwrap_err();
    assert!(
        other.contains("us-east-1") && other.contains("eu-west-1"),
        "{other}"
    );
    let gov = check_key_in_region("alias/cache", "us-gov-west-1").unwrap_err();
    assert!(gov.contains("service-managed"), "{gov}");
}

#[test]
fn a_plan_without_target_needs_enable_transit_and_says_so_naming_target() {
    let text = "version: 1\nname: t\nsource:\n  replication_group_id: orders\nsteps:\n  - kind: preflight\n";
    let issues = issues_in(text);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].field, "target");
    assert!(issues[0].rule.contains("enable_transit"), "{issues:?}");
    let ok = "version: 1\nname: t\nsource:\n  replication_group_id: orders\nsteps:\n  - kind: preflight\n  - kind: enable_transit\n";
    let plan = parse_str(ok, "plan.yaml").expect("an in-place plan");
    assert!(plan.is_in_place());
    assert!(plan.enable_transit_step().is_some());
    // Unknown fields are still errors (no `mode:` switch).
    let unknown = ok.replace("name: t\n", "name: t\nmode: in_place\n");
    assert_eq!(issues_in(&unknown)[0].field, "mode");
}
