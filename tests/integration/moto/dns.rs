//! Route53 on moto: a client, the record a test reads back, and the CNAME clients resolve before a
//! cutover.

use aws_sdk_elasticache::config::{BehaviorVersion, Credentials};

use super::unique;
use crate::harness::block_on;

/// A Route53 client on moto.
pub(crate) fn route53(url: &str) -> aws_sdk_route53::Client {
    aws_sdk_route53::Client::from_conf(
        aws_sdk_route53::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(url)
            .region(aws_sdk_route53::config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build(),
    )
}

/// `(type, value, ttl)` of the record `name` in `zone`.
pub(crate) fn dns_record(
    dns: &aws_sdk_route53::Client,
    zone: &str,
    name: &str,
) -> Option<(String, String, i64)> {
    block_on(async {
        let out = dns
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .send()
            .await
            .unwrap();
        out.resource_record_sets()
            .iter()
            .find(|r| r.name().trim_end_matches('.') == name)
            .map(|r| {
                (
                    r.r#type().as_str().to_string(),
                    r.resource_records()[0].value().to_string(),
                    r.ttl().unwrap_or(0),
                )
            })
    })
}

/// A new hosted zone holding the CNAME `orders.<zone>` to `value` with `ttl`: the record clients resolve
/// today. Returns the zone's id (as the API returns it) and the record's name.
pub(crate) fn seed_cname(dns: &aws_sdk_route53::Client, value: &str, ttl: i64) -> (String, String) {
    use aws_sdk_route53::types::{
        Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
    };
    let zone_name = format!("{}.example.com", unique("zone"));
    let record = format!("orders.{zone_name}");
    block_on(async {
        let out = dns
            .create_hosted_zone()
            .name(&zone_name)
            .caller_reference(unique("ref"))
            .send()
            .await
            .expect("create hosted zone");
        let zone = out.hosted_zone().unwrap().id().to_string();
        let set = ResourceRecordSet::builder()
            .name(&record)
            .r#type(RrType::Cname)
            .ttl(ttl)
            .resource_records(ResourceRecord::builder().value(value).build().unwrap())
            .build()
            .unwrap();
        let change = Change::builder()
            .action(ChangeAction::Create)
            .resource_record_set(set)
            .build()
            .unwrap();
        dns.change_resource_record_sets()
            .hosted_zone_id(&zone)
            .change_batch(ChangeBatch::builder().changes(change).build().unwrap())
            .send()
            .await
            .expect("seed the CNAME");
        (zone, record)
    })
}
