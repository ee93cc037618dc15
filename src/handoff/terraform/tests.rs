use std::collections::BTreeMap;

use super::*;

fn handoff(token: TokenRef) -> Handoff {
    Handoff {
        plan_name: "orders".into(),
        run_id: "20261202010647-ddce79".into(),
        names: Names {
            resource: "orders_enc".into(),
            old_resource: "orders".into(),
        },
        group: NewGroup {
            id: "orders-enc".into(),
            description: "a \"quoted\" ${not.a.ref} C:\\path".into(),
            engine: "redis".into(),
            engine_version: Some("7.0".into()),
            node_type: Some("cache.t3.micro".into()),
            layout: Layout::Single {
                num_cache_clusters: 2,
            },
            automatic_failover_enabled: false,
            multi_az_enabled: false,
            at_rest_encryption_enabled: true,
            kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/k".into()),
            transit_encryption_enabled: true,
            transit_encryption_mode: Some("required".into()),
            subnet_group_name: None,
            security_group_ids: vec!["sg-1".into()],
            parameter_group_name: Some("default.redis7".into()),
            port: None,
            maintenance_window: None,
            snapshot_window: None,
            tags: BTreeMap::from([("ecmigrate:plan".into(), "orders".into())]),
        },
        old_group_id: "orders".into(),
        old_group_deleted: true,
        snapshot_name: Some("orders-ecmigrate-1".into()),
        token,
        run_state: RunStatus::Done,
    }
}

fn attr<'a>(body: &'a hcl::Body, key: &str) -> &'a hcl::Expression {
    body.attributes()
        .find(|a| a.key() == key)
        .unwrap_or_else(|| panic!("no `{key}`"))
        .expr()
}

/// A quoted string's value as Terraform reads it (templates evaluated: `$${` is a literal `${`).
fn string(expr: &hcl::Expression) -> String {
    use hcl::eval::Evaluate;
    match expr.evaluate(&hcl::eval::Context::new()) {
        Ok(hcl::Value::String(s)) => s,
        other => panic!("not a string: {expr:?} → {other:?}"),
    }
}

#[test]
fn the_file_parses_and_says_what_the_group_is() {
    let h = handoff(TokenRef::Variable {
        name: "orders_enc_auth_token".into(),
        store: "file:/x/orders.token".into(),
    });
    let text = h.hcl();
    let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let block = |kind: &str| {
        body.blocks()
            .find(|b| b.identifier() == kind)
            .unwrap_or_else(|| panic!("no {kind} block in\n{text}"))
    };
    let import = block("import");
    assert_eq!(string(attr(import.body(), "id")), "orders-enc");
    assert_eq!(
        attr(import.body(), "to").to_string(),
        "aws_elasticache_replication_group.orders_enc"
    );
    let resource = block("resource");
    let labels: Vec<&str> = resource.labels().iter().map(|l| l.as_str()).collect();
    assert_eq!(labels, ["aws_elasticache_replication_group", "orders_enc"]);
    let r = resource.body();
    // The description survives quotes, a backslash and a template sequence unchanged.
    assert_eq!(
        string(attr(r, "description")),
        "a \"quoted\" ${not.a.ref} C:\\path"
    );
    assert_eq!(
        attr(r, "at_rest_encryption_enabled"),
        &hcl::Expression::Bool(true)
    );
    assert_eq!(
        string(attr(r, "kms_key_id")),
        "arn:aws:kms:us-east-1:123456789012:key/k"
    );
    assert_eq!(
        attr(r, "auth_token").to_string(),
        "var.orders_enc_auth_token"
    );
    assert!(
        r.attributes()
            .all(|a| a.key() != "snapshot_name" && a.key() != "port")
    );
    assert!(
        text.contains("import to read:\n  # subnet_group_name, port.\n"),
        "{text}"
    );
    let variable = block("variable");
    assert_eq!(
        attr(variable.body(), "sensitive"),
        &hcl::Expression::Bool(true)
    );
    let removed = block("removed");
    assert_eq!(
        attr(removed.body(), "from").to_string(),
        "aws_elasticache_replication_group.orders"
    );
    let lifecycle = removed.body().blocks().next().expect("lifecycle");
    assert_eq!(
        attr(lifecycle.body(), "destroy"),
        &hcl::Expression::Bool(false)
    );
}

#[test]
fn a_secrets_manager_token_is_read_by_a_data_source() {
    let h = handoff(TokenRef::SecretsManager {
        name: "orders_enc_auth_token".into(),
        secret_id: "ecmigrate/orders".into(),
    });
    let text = h.hcl();
    let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let data = body
        .blocks()
        .find(|b| b.identifier() == "data")
        .expect("data block");
    let labels: Vec<&str> = data.labels().iter().map(|l| l.as_str()).collect();
    assert_eq!(
        labels,
        ["aws_secretsmanager_secret_version", "orders_enc_auth_token"]
    );
    assert_eq!(string(attr(data.body(), "secret_id")), "ecmigrate/orders");
    assert!(body.blocks().all(|b| b.identifier() != "variable"));
    let resource = body
        .blocks()
        .find(|b| b.identifier() == "resource")
        .unwrap();
    assert_eq!(
        attr(resource.body(), "auth_token").to_string(),
        "data.aws_secretsmanager_secret_version.orders_enc_auth_token.secret_string"
    );
}

#[test]
fn a_cluster_states_shards_and_replicas_not_a_node_count() {
    let mut h = handoff(TokenRef::Variable {
        name: "t".into(),
        store: "env:T".into(),
    });
    h.group.layout = Layout::Cluster {
        num_node_groups: 3,
        replicas_per_node_group: 1,
    };
    h.group.automatic_failover_enabled = true;
    let body = hcl::parse(&h.hcl()).unwrap();
    let r = body
        .blocks()
        .find(|b| b.identifier() == "resource")
        .unwrap()
        .body();
    assert_eq!(attr(r, "num_node_groups"), &hcl::Expression::from(3u64));
    assert_eq!(
        attr(r, "replicas_per_node_group"),
        &hcl::Expression::from(1u64)
    );
    assert_eq!(
        attr(r, "automatic_failover_enabled"),
        &hcl::Expression::Bool(true)
    );
    assert!(r.attributes().all(|a| a.key() != "num_cache_clusters"));
}
