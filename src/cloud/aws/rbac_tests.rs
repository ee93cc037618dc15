//! The RBAC requests as the SDK sends them (aws-smithy-mocks: moto models CreateUser and DescribeUsers
//! but not user groups, see `tests/integration/rbac.rs`): a group created with `UserGroupIds` never
//! carries `AuthToken`; CreateUser carries its password and nothing echoes it; DescribeUserGroups maps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_elasticache::error::ErrorMetadata;
use aws_sdk_elasticache::operation::create_user::{
    CreateUserError, CreateUserInput, CreateUserOutput,
};
use aws_sdk_elasticache::operation::describe_user_groups::{
    DescribeUserGroupsError, DescribeUserGroupsOutput,
};
use aws_sdk_elasticache::types as ec;
use aws_smithy_mocks::mock;

use super::tests::{aws_with, captured_creates, request};
use crate::cloud::{
    CloudError, CloudRead, CloudWrite, CreateEncryptedGroup, CreateUser, GroupAuth,
};
use crate::secret::Secret;

const PASSWORD: &str = "User-password-0123456789abcdef";

#[tokio::test]
async fn a_group_with_a_user_group_is_created_without_a_token() {
    let sent = captured_creates(&[CreateEncryptedGroup {
        auth: GroupAuth::UserGroup("orders-users".into()),
        ..request(true)
    }])
    .await;
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(r.user_group_ids(), ["orders-users".to_string()]);
    assert_eq!(
        r.auth_token(),
        None,
        "AuthToken must not be sent with UserGroupIds"
    );
    assert_eq!(r.transit_encryption_enabled(), Some(true));
    assert_eq!(r.at_rest_encryption_enabled(), Some(true));
    // And the token request names no user group.
    let token = captured_creates(&[request(false)]).await;
    assert!(token[0].user_group_ids().is_empty());
    assert!(token[0].auth_token().is_some());
}

fn user() -> CreateUser {
    CreateUser {
        user_id: "orders-app".into(),
        user_name: "app".into(),
        engine: "redis".into(),
        access_string: "on ~* +@all".into(),
        passwords: vec![Secret::new(PASSWORD)],
        tags: BTreeMap::from([("ecmigrate:plan".to_string(), "orders".to_string())]),
    }
}

#[tokio::test]
async fn create_user_sends_the_password_and_the_access_string() {
    let seen: Arc<Mutex<Vec<CreateUserInput>>> = Arc::default();
    let sink = seen.clone();
    let rule = mock!(aws_sdk_elasticache::Client::create_user)
        .match_requests(move |input| {
            sink.lock().unwrap().push(input.clone());
            true
        })
        .then_output(|| CreateUserOutput::builder().build());
    aws_with(&[&rule], 1)
        .create_user(&user())
        .await
        .expect("create");
    let seen = seen.lock().unwrap();
    let r = &seen[0];
    assert_eq!(r.user_id(), Some("orders-app"));
    assert_eq!(r.user_name(), Some("app"));
    assert_eq!(r.engine(), Some("redis"));
    assert_eq!(r.access_string(), Some("on ~* +@all"));
    assert_eq!(r.no_password_required(), Some(false));
    // Compared as a bool: a failing assert_eq would print the password.
    assert!(
        r.passwords() == [PASSWORD.to_string()],
        "the password is sent"
    );
}

#[tokio::test]
async fn an_error_of_create_user_never_carries_the_password() {
    let rule = mock!(aws_sdk_elasticache::Client::create_user).then_error(|| {
        CreateUserError::generic(
            ErrorMetadata::builder()
                .code("InvalidParameterValue")
                .message(format!("bad password {PASSWORD}"))
                .build(),
        )
    });
    let e = aws_with(&[&rule], 1)
        .create_user(&user())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, CloudError::InvalidRequest { .. }), "{e:?}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[tokio::test]
async fn user_groups_are_described_or_absent() {
    let found = mock!(aws_sdk_elasticache::Client::describe_user_groups).then_output(|| {
        DescribeUserGroupsOutput::builder()
            .user_groups(
                ec::UserGroup::builder()
                    .user_group_id("orders-users")
                    .status("creating")
                    .engine("redis")
                    .user_ids("orders-app")
                    .user_ids("orders-default")
                    .build(),
            )
            .build()
    });
    let g = aws_with(&[&found], 1)
        .describe_user_group("orders-users")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(g.status, "creating");
    assert_eq!(g.user_ids, ["orders-app", "orders-default"]);
    let missing = mock!(aws_sdk_elasticache::Client::describe_user_groups).then_error(|| {
        // The code the service answers with (the fault's shape name without `Fault`).
        DescribeUserGroupsError::generic(
            ErrorMetadata::builder()
                .code("UserGroupNotFound")
                .message("User group orders-users not found")
                .build(),
        )
    });
    let none = aws_with(&[&missing], 1)
        .describe_user_group("orders-users")
        .await
        .unwrap();
    assert!(none.is_none());
}

/// The clients against the moto server `scripts/test.sh` starts (`ECMIGRATE_TEST_MOTO_URL`); `None`
/// with a notice outside CI when it is not running.
fn moto_aws() -> Option<super::Aws> {
    let url = match std::env::var("ECMIGRATE_TEST_MOTO_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "ECMIGRATE_TEST_MOTO_URL is not set under CI: run the tests with scripts/test.sh"
            )
        }
        _ => {
            eprintln!("notice: ECMIGRATE_TEST_MOTO_URL is not set; skipping a moto test");
            return None;
        }
    };
    use aws_sdk_elasticache::config::{BehaviorVersion, Credentials, Region};
    let creds = Credentials::new("testing", "testing", None, None, "test");
    let ec = aws_sdk_elasticache::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&url)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .build();
    // Only ElastiCache is called; the other clients point nowhere.
    let unused = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    Some(super::Aws {
        ec: aws_sdk_elasticache::Client::from_conf(ec),
        kms: aws_sdk_kms::Client::new(&unused),
        secrets: aws_sdk_secretsmanager::Client::new(&unused),
        dns: aws_sdk_route53::Client::new(&unused),
        sts: aws_sdk_sts::Client::new(&unused),
    })
}

/// moto models users (CreateUser, DescribeUsers) but not user groups: the user half against it.
#[tokio::test]
async fn moto_creates_and_describes_a_user_once() {
    let Some(aws) = moto_aws() else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let id = format!("rbac-{}-{nanos}", std::process::id());
    assert!(
        aws.describe_user(&id).await.unwrap().is_none(),
        "absent before"
    );
    let request = CreateUser {
        user_id: id.clone(),
        ..user()
    };
    aws.create_user(&request).await.expect("CreateUser on moto");
    let u = aws.describe_user(&id).await.unwrap().expect("described");
    assert_eq!(u.user_id, id);
    assert_eq!(u.user_name, "app");
    assert_eq!(u.engine, "redis");
    assert_eq!(u.status, "active");
    let again = aws.create_user(&request).await.unwrap_err();
    assert!(
        matches!(again, CloudError::AlreadyExists { .. }),
        "{again:?}"
    );
}

#[tokio::test]
async fn the_move_to_rbac_adds_the_user_group_and_deletes_the_token() {
    use aws_sdk_elasticache::operation::modify_replication_group::{
        ModifyReplicationGroupInput, ModifyReplicationGroupOutput,
    };
    let seen: Arc<Mutex<Vec<ModifyReplicationGroupInput>>> = Arc::default();
    let sink = seen.clone();
    let rule = mock!(aws_sdk_elasticache::Client::modify_replication_group)
        .match_requests(move |input| {
            sink.lock().unwrap().push(input.clone());
            true
        })
        .then_output(|| ModifyReplicationGroupOutput::builder().build());
    aws_with(&[&rule], 1)
        .modify_to_user_group("orders-enc", "orders-users")
        .await
        .expect("modify");
    let seen = seen.lock().unwrap();
    let r = &seen[0];
    assert_eq!(r.replication_group_id(), Some("orders-enc"));
    assert_eq!(r.user_group_ids_to_add(), ["orders-users".to_string()]);
    assert_eq!(
        r.auth_token_update_strategy(),
        Some(&ec::AuthTokenUpdateStrategyType::Delete)
    );
    assert_eq!(r.auth_token(), None);
    assert_eq!(r.apply_immediately(), Some(true));
}
