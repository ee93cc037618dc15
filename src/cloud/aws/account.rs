//! What the audit asks of the account rather than of one group: the regions where ElastiCache is offered
//! (the SSM public parameters `/aws/service/global-infrastructure/services/elasticache/regions`) and the
//! caller identity (STS GetCallerIdentity) that the audit and the evidence pack name.
//!
//! Why SSM and not EC2 DescribeRegions: the parameters list the regions of *this service*, and the SSM
//! client is a small crate where the EC2 one is among the largest of the SDK. Regions the account has not
//! opted into are in that list too; the audit reports them as refused, which is what they are.

use crate::cloud::{CloudError, CloudResult};

use super::{load_config_any_region, map_err};

/// The path of the service's region parameters; each parameter's value is a region code.
const ELASTICACHE_REGIONS_PATH: &str =
    "/aws/service/global-infrastructure/services/elasticache/regions";

/// The regions where `/aws/service/global-infrastructure` can be queried (AWS documents this list,
/// "Calling public parameters for AWS services, Regions…" in the Systems Manager user guide); elsewhere
/// the query goes to us-east-1.
const GLOBAL_INFRASTRUCTURE_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ap-east-1",
    "ap-south-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ca-central-1",
    "eu-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-north-1",
    "sa-east-1",
];

/// Who is calling: the account id and the caller's ARN.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
}

/// The region the environment and shared config name (AWS_REGION, the profile's `region`), if any.
pub async fn current_region(profile: Option<String>) -> Option<String> {
    let config = load_config_any_region(None, profile).await;
    config.region().map(|r| r.to_string())
}

/// Every region where ElastiCache is offered, sorted. `region` is where the caller works (it answers the
/// query when it can); `profile` as everywhere.
pub async fn elasticache_regions(
    region: Option<String>,
    profile: Option<String>,
) -> CloudResult<Vec<String>> {
    let mut config = load_config_any_region(region, profile).await;
    let current = config.region().map(|r| r.to_string());
    if !current
        .as_deref()
        .is_some_and(|r| GLOBAL_INFRASTRUCTURE_REGIONS.contains(&r))
    {
        config = config
            .into_builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
    }
    let ssm = aws_sdk_ssm::Client::new(&config);
    let mut regions = Vec::new();
    let mut pages = ssm
        .get_parameters_by_path()
        .path(ELASTICACHE_REGIONS_PATH)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| map_err(e, "SSM parameter path", ELASTICACHE_REGIONS_PATH))?;
        regions.extend(
            page.parameters()
                .iter()
                .filter_map(|p| p.value().map(str::to_string)),
        );
    }
    if regions.is_empty() {
        return Err(CloudError::Other {
            message: format!("SSM returned no regions under {ELASTICACHE_REGIONS_PATH}"),
        });
    }
    regions.sort();
    regions.dedup();
    Ok(regions)
}

/// The caller identity of the credentials `sts` was built with.
pub(super) async fn caller_identity_of(sts: &aws_sdk_sts::Client) -> CloudResult<CallerIdentity> {
    let me = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| map_err(e, "caller identity", "sts"))?;
    Ok(CallerIdentity {
        account: me.account().unwrap_or_default().to_string(),
        arn: me.arn().unwrap_or_default().to_string(),
    })
}
