//! Route53: the CNAME clients resolve, read, upserted at cutover, and the change status waited on.

use aws_sdk_route53::Client;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

use super::map_err;
use crate::cloud::{CloudError, CloudResult, DnsRecord, dns_name_key};

pub(super) async fn dns_record(
    dns: &Client,
    zone: &str,
    name: &str,
) -> CloudResult<Option<DnsRecord>> {
    let out = dns
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .start_record_name(name)
        .max_items(10)
        .send()
        .await
        .map_err(|e| map_err(e, "DNS record", name))?;
    let wanted = dns_name_key(name);
    Ok(out
        .resource_record_sets()
        .iter()
        .find(|r| dns_name_key(r.name()) == wanted)
        .map(|r| DnsRecord {
            record_type: r.r#type().as_str().to_string(),
            value: r
                .resource_records()
                .first()
                .map(|v| v.value().to_string())
                .unwrap_or_default(),
            ttl: r.ttl().unwrap_or(0).max(0) as u64,
        }))
}

pub(super) async fn dns_change_status(dns: &Client, change_id: &str) -> CloudResult<String> {
    let out = dns
        .get_change()
        .id(change_id)
        .send()
        .await
        .map_err(|e| map_err(e, "DNS change", change_id))?;
    Ok(out
        .change_info()
        .map(|c| c.status().as_str().to_string())
        .unwrap_or_default())
}

pub(super) async fn upsert_cname(
    dns: &Client,
    zone: &str,
    name: &str,
    value: &str,
    ttl: u64,
) -> CloudResult<String> {
    let invalid = |e: aws_sdk_route53::error::BuildError| CloudError::invalid(e.to_string());
    let record = ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::Cname)
        .ttl(ttl as i64)
        .resource_records(
            ResourceRecord::builder()
                .value(value)
                .build()
                .map_err(invalid)?,
        )
        .build()
        .map_err(invalid)?;
    let batch = ChangeBatch::builder()
        .comment("ecmigrate cutover")
        .changes(
            Change::builder()
                .action(ChangeAction::Upsert)
                .resource_record_set(record)
                .build()
                .map_err(invalid)?,
        )
        .build()
        .map_err(invalid)?;
    let out = dns
        .change_resource_record_sets()
        .hosted_zone_id(zone)
        .change_batch(batch)
        .send()
        .await
        .map_err(|e| map_err(e, "DNS record", name))?;
    Ok(out
        .change_info()
        .map(|c| c.id().to_string())
        .unwrap_or_default())
}
