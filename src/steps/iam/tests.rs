use std::collections::BTreeSet;

use super::{IamPolicy, policy};

/// A valid aws plan with `auth_token` and `steps` as given.
fn plan(auth_token: &str, steps: &str) -> crate::plan::Plan {
    let text = format!(
        "version: 1\nname: orders\nprovider: aws\naws: {{ region: eu-west-1 }}\nsource:\n  replication_group_id: orders\n\
         target:\n  replication_group_id: orders-enc\n  kms_key_id: alias/orders\n  auth_token: {auth_token}\nsteps:\n{steps}"
    );
    crate::plan::parse_str(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}: {text}"))
}

const FILE: &str = "{ file: orders.token }";
const ALL_BUT_CUTOVER: &str =
    "  - kind: preflight\n  - kind: backup\n  - kind: restore_encrypted\n  - kind: verify\n";

fn with_cutover(strategy: &str) -> String {
    format!(
        "{ALL_BUT_CUTOVER}  - kind: cutover\n{strategy}  - kind: delete_source\n    confirm: orders\n"
    )
}

const ROUTE53: &str = "    strategy: route53\n    hosted_zone_id: Z0123456789ABCDEFGHIJ\n    record_name: Orders.Cache.Example.com.\n";

fn services(p: &IamPolicy) -> BTreeSet<String> {
    p.all_actions()
        .iter()
        .map(|a| a.split(':').next().unwrap().to_string())
        .collect()
}

fn statement_of<'a>(p: &'a IamPolicy, action: &str) -> &'a super::Statement {
    let found: Vec<_> = p
        .policy
        .statement
        .iter()
        .filter(|s| s.action.iter().any(|a| a == action))
        .collect();
    assert_eq!(found.len(), 1, "{action} in {} statements", found.len());
    found[0]
}

#[test]
fn a_plan_without_route53_has_no_route53_action() {
    let p = policy(&plan(FILE, &with_cutover("    strategy: manual\n")), None);
    assert!(!services(&p).contains("route53"), "{:?}", p.all_actions());
    let p = policy(&plan(FILE, ALL_BUT_CUTOVER), None);
    assert!(!services(&p).contains("route53"));
}

#[test]
fn a_route53_cutover_reads_upserts_and_waits_on_its_zone_and_record_only() {
    let p = policy(&plan(FILE, &with_cutover(ROUTE53)), None);
    let route53: BTreeSet<String> = p
        .all_actions()
        .into_iter()
        .filter(|a| a.starts_with("route53:"))
        .collect();
    assert_eq!(
        route53,
        [
            "route53:ChangeResourceRecordSets",
            "route53:GetChange",
            "route53:ListResourceRecordSets"
        ]
        .map(String::from)
        .into()
    );
    let change = statement_of(&p, "route53:ChangeResourceRecordSets");
    assert_eq!(
        change.resource,
        "arn:aws:route53:::hostedzone/Z0123456789ABCDEFGHIJ"
    );
    let names = &change.condition["ForAllValues:StringEquals"]["route53:ChangeResourceRecordSetsNormalizedRecordNames"];
    assert_eq!(names, &serde_json::json!(["orders.cache.example.com"]));
}

#[test]
fn a_file_token_store_has_no_secrets_manager_action() {
    let p = policy(&plan(FILE, &with_cutover(ROUTE53)), None);
    assert!(
        !services(&p).contains("secretsmanager"),
        "{:?}",
        p.all_actions()
    );
    let p = policy(&plan("{ env: ORDERS_TOKEN }", ALL_BUT_CUTOVER), None);
    assert!(!services(&p).contains("secretsmanager"));
}

#[test]
fn secrets_manager_is_read_only_unless_the_token_is_generated() {
    let sm = |a: &IamPolicy| -> BTreeSet<String> {
        a.all_actions()
            .into_iter()
            .filter(|x| x.starts_with("secretsmanager:"))
            .collect()
    };
    let read = policy(
        &plan("{ secrets_manager: ecmigrate/orders }", ALL_BUT_CUTOVER),
        None,
    );
    assert_eq!(
        sm(&read),
        ["secretsmanager:GetSecretValue".to_string()].into()
    );
    let generated = policy(
        &plan(
            "{ generate: true, secrets_manager: ecmigrate/orders }",
            ALL_BUT_CUTOVER,
        ),
        None,
    );
    assert_eq!(
        sm(&generated),
        [
            "secretsmanager:CreateSecret",
            "secretsmanager:GetSecretValue",
            "secretsmanager:PutSecretValue",
            "secretsmanager:TagResource"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(
        statement_of(&generated, "secretsmanager:GetSecretValue").resource,
        "arn:aws:secretsmanager:eu-west-1:*:secret:ecmigrate/orders-??????"
    );
}

#[test]
fn no_step_no_action_preflight_alone_changes_nothing() {
    // Validation requires backup and restore_encrypted; the policy is a function of whatever steps it gets.
    let mut preflight = plan(FILE, ALL_BUT_CUTOVER);
    preflight
        .steps
        .retain(|s| matches!(s, crate::plan::StepSpec::Preflight(_)));
    let p = policy(&preflight, None);
    let mutating: Vec<String> = p
        .all_actions()
        .into_iter()
        .filter(|a| {
            let op = a.split(':').nth(1).unwrap();
            ["Create", "Delete", "Put", "Change", "AddTags", "Tag"]
                .iter()
                .any(|v| op.starts_with(v))
        })
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    // Without a delete_source step, only the target may be deleted (a failed create, recreated).
    let p = policy(&plan(FILE, ALL_BUT_CUTOVER), None);
    assert_eq!(
        statement_of(&p, "elasticache:DeleteReplicationGroup").resource,
        "arn:aws:elasticache:eu-west-1:*:replicationgroup:orders-enc"
    );
    let mut empty = preflight;
    empty.steps.clear();
    assert!(policy(&empty, None).policy.statement.is_empty());
}

#[test]
fn region_and_account_come_from_the_flag_the_plan_or_its_arns_else_placeholders() {
    let p = policy(&plan(FILE, ALL_BUT_CUTOVER), None);
    assert_eq!(
        (p.region.value.as_str(), p.region.source.as_str()),
        ("eu-west-1", "aws.region")
    );
    assert!(p.account.is_placeholder());
    let p = policy(&plan(FILE, ALL_BUT_CUTOVER), Some("ap-southeast-2"));
    assert_eq!(p.region.source, "--region");

    let mut by_arn = plan(FILE, ALL_BUT_CUTOVER);
    by_arn.aws = None;
    by_arn.target.as_mut().unwrap().kms_key_id =
        Some("arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into());
    let p = policy(&by_arn, None);
    assert_eq!(p.region.value, "us-west-2");
    assert_eq!(
        (p.account.value.as_str(), p.account.source.as_str()),
        ("111122223333", "target.kms_key_id")
    );
    assert_eq!(
        statement_of(&p, "kms:DescribeKey").resource,
        "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    );
    assert!(statement_of(&p, "kms:DescribeKey").condition.is_null());

    by_arn.target.as_mut().unwrap().kms_key_id = Some("alias/orders".into());
    let p = policy(&by_arn, None);
    assert!(p.region.is_placeholder() && p.account.is_placeholder());
    let grant = statement_of(&p, "kms:CreateGrant");
    assert_eq!(grant.resource, "arn:aws:kms:*:*:key/*");
    assert_eq!(
        grant.condition["ForAnyValue:StringEquals"]["kms:ResourceAliases"],
        "alias/orders"
    );
    assert_eq!(
        grant.condition["StringLike"]["kms:ViaService"],
        "elasticache.*.amazonaws.com"
    );
}

#[test]
fn groups_snapshots_and_members_are_scoped_to_the_plan_and_each_action_is_in_one_statement() {
    let p = policy(&plan(FILE, &with_cutover(ROUTE53)), None);
    for action in p.all_actions() {
        statement_of(&p, &action);
    }
    let members = statement_of(&p, "elasticache:DescribeCacheClusters");
    // `orders-0*`, not `orders-*`, which would also match orders-enc's clusters.
    assert_eq!(
        members.resource,
        serde_json::json!([
            "arn:aws:elasticache:eu-west-1:*:cluster:orders-0*",
            "arn:aws:elasticache:eu-west-1:*:cluster:orders-enc-0*"
        ])
    );
    let snapshots = statement_of(&p, "elasticache:CreateSnapshot");
    assert!(
        snapshots
            .resource
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(
                "arn:aws:elasticache:eu-west-1:*:snapshot:orders-ecmigrate-*"
            )),
        "{:?}",
        snapshots.resource
    );
    // Listing the source's snapshots covers describing this run's: one resource, not two.
    assert_eq!(
        statement_of(&p, "elasticache:DescribeSnapshots").resource,
        "arn:aws:elasticache:eu-west-1:*:snapshot:*"
    );
    // The only unscoped action authorizes no resource at all.
    let unscoped: Vec<&String> = p
        .policy
        .statement
        .iter()
        .filter(|s| s.resource == "*")
        .flat_map(|s| &s.action)
        .collect();
    assert_eq!(unscoped, vec!["kms:ListAliases"]);
}

#[test]
fn an_rbac_target_may_create_its_users_and_group_and_name_the_group() {
    let text = "version: 1\nname: orders\nprovider: aws\naws: { region: eu-west-1 }\nsource:\n  replication_group_id: orders\n\
         target:\n  replication_group_id: orders-enc\n  auth:\n    rbac:\n      user_group_id: orders-users\n      data_plane_user: orders-app\n      users:\n\
         \x20       - { user_id: orders-default, user_name: default, access_string: \"off ~* -@all\", password: { generate: true, file: d.pw } }\n\
         \x20       - { user_id: Orders-App, user_name: app, access_string: \"on ~* +@all\", password: { secrets_manager: orders/app } }\n\
         steps:\n  - kind: preflight\n  - kind: backup\n  - kind: restore_encrypted\n";
    let plan = crate::plan::parse_str(text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let p = policy(&plan, None);
    let user = statement_of(&p, "elasticache:CreateUser")
        .resource
        .to_string();
    for arn in [
        "arn:aws:elasticache:eu-west-1:*:user:orders-default",
        // Stored in lowercase, so granted in lowercase.
        "arn:aws:elasticache:eu-west-1:*:user:orders-app",
    ] {
        assert!(user.contains(arn), "{arn} in {user}");
    }
    let create = statement_of(&p, "elasticache:CreateReplicationGroup")
        .resource
        .to_string();
    assert!(
        create.contains("arn:aws:elasticache:eu-west-1:*:usergroup:orders-users"),
        "{create}"
    );
    assert!(p.all_actions().contains("elasticache:CreateUserGroup"));
    assert!(p.all_actions().contains("elasticache:DescribeUserGroups"));
    let secret = statement_of(&p, "secretsmanager:GetSecretValue")
        .resource
        .to_string();
    assert!(secret.contains("secret:orders/app"), "{secret}");
}
