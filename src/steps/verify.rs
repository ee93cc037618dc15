//! `verify`: the target holds what the source holds: key counts per database, then a sample (default 1000
//! keys per database) or every key compared by type, value and TTL.

use serde_json::json;

use crate::data::verify::{VerifyMode, VerifyOptions, verify_with};
use crate::engine::{StepContext, StepOutcome};
use crate::error::{Error, Result};
use crate::plan::VerifyStep;
use crate::steps::live::LiveStream;
use crate::steps::{load_login, obj, require_group, source_data_endpoint, target_data_endpoint};

pub async fn run(ctx: &StepContext, spec: &VerifyStep, live: &LiveStream) -> Result<StepOutcome> {
    let plan = &ctx.plan.plan;
    let mode = if spec.full {
        VerifyMode::Full
    } else {
        VerifyMode::Sample(spec.sample.unwrap_or(1000))
    };
    let tolerance = spec.ttl_tolerance_ms.unwrap_or(5000) as i64;
    let source = require_group(ctx, &plan.source.replication_group_id).await?;
    let target = require_group(ctx, &plan.target().replication_group_id).await?;
    let src = source_data_endpoint(ctx, &source)?;
    let mode_text = match mode {
        VerifyMode::Full => "every key".to_string(),
        VerifyMode::Sample(n) => format!("a sample of up to {n} keys per database"),
    };
    if ctx.is_simulated(&target.id) {
        return rehearse(ctx, &src, &mode_text, tolerance).await;
    }
    let token = load_login(ctx).await?;
    let dst = target_data_endpoint(ctx, &target, token)?;
    let progress = ctx.progress_reporter("keys compared");
    let hint = "check that both data endpoints are reachable (data_endpoint, tls_ca_file, token)";
    live.ensure(ctx).await?;
    let stream = live.stream().await;
    if let Some(stream) = &stream {
        stream
            .lock()
            .await
            .catch_up(&|_, _| {})
            .await
            .map_err(|e| Error::failed(e, hint))?;
    }
    // While a live copy runs, writes are expected: the count that spares the target most TTL reads
    // would not hold, and the pass would run twice.
    let options = VerifyOptions {
        count_target_ttls: stream.is_none(),
        ..VerifyOptions::default()
    };
    let mut report = verify_with(&src, &dst, mode, tolerance, &options, &progress)
        .await
        .map_err(|e| Error::failed(e, hint))?;
    // Keys that changed on the source while the counts were read (a live stream only): a count difference
    // no larger than that is writes in flight, not a loss.
    let in_flight = match &stream {
        Some(stream) if !report.passed() => {
            recheck_under_stream(ctx, stream, (&src, &dst), &mut report, tolerance, hint).await?
        }
        _ => None,
    };
    judge(ctx, &report, in_flight, &mode_text)?;
    Ok(StepOutcome::done(&obj(vec![
        ("mode", json!(mode_text)),
        (
            "key_counts",
            json!(
                report
                    .key_counts
                    .iter()
                    .map(|(db, (s, t))| (format!("db{db}"), json!({"source": s, "target": t})))
                    .collect::<serde_json::Map<_, _>>()
            ),
        ),
        ("keys_compared", json!(report.keys_compared)),
        ("mismatches", json!(0)),
        ("ttl_tolerance_ms", json!(tolerance)),
        // How a full comparison checked the target's TTLs (null for a sample): the evidence says it.
        ("ttl_check", json!(report.ttl_check)),
    ])))
}

/// Whether the count differences, summed over databases, are no more than the keys changed meanwhile.
fn counts_explained(
    counts: &std::collections::BTreeMap<i64, (u64, u64)>,
    in_flight: Option<u64>,
) -> bool {
    let difference: u64 = counts.values().map(|(a, b)| a.abs_diff(*b)).sum();
    in_flight.is_some_and(|n| difference > 0 && difference <= n)
}

/// Key counts per database of both sides (summed over a cluster's primaries), read back to back.
async fn key_counts(
    src: &crate::data::connect::RedisEndpoint,
    dst: &crate::data::connect::RedisEndpoint,
) -> std::result::Result<std::collections::BTreeMap<i64, (u64, u64)>, String> {
    use crate::data::verify::keyspace_of_every_primary;
    let (a, b) = tokio::try_join!(
        keyspace_of_every_primary(src, crate::data::Role::Source),
        keyspace_of_every_primary(dst, crate::data::Role::Target)
    )
    .map_err(|e| e.to_string())?;
    Ok(a.keys()
        .chain(b.keys())
        .map(|db| {
            (
                *db,
                (
                    a.get(db).copied().unwrap_or(0),
                    b.get(db).copied().unwrap_or(0),
                ),
            )
        })
        .collect())
}

/// The target exists only in this rehearsal: check the source side and say what would be compared.
async fn rehearse(
    ctx: &StepContext,
    src: &crate::data::connect::RedisEndpoint,
    mode_text: &str,
    tolerance: i64,
) -> Result<StepOutcome> {
    let counts = crate::data::verify::keyspace_of_every_primary(src, crate::data::Role::Source)
        .await
        .map_err(|e| {
            Error::failed(
                e,
                "check source.data_endpoint and that the source is reachable",
            )
        })?;
    ctx.check(
        "source_reachable",
        true,
        format!(
            "{} answers; keys per database: {counts:?}",
            src.display_url()
        ),
    );
    ctx.note(format!("would compare key counts per database and {mode_text} by type, value and TTL (±{tolerance} ms)"));
    Ok(StepOutcome::done(&obj(vec![
        ("mode", json!(mode_text)),
        ("dry_run", json!(true)),
    ])))
}

/// Writes continue while a streamed copy is verified: a key that changed during the comparison is checked
/// again once the stream has caught up, and counts are taken with the tailer held. Returns the keys the
/// source changed while the counts were read (a count difference no larger than that is writes in flight).
async fn recheck_under_stream(
    ctx: &StepContext,
    stream: &crate::steps::live::SharedStream,
    (src, dst): (
        &crate::data::connect::RedisEndpoint,
        &crate::data::connect::RedisEndpoint,
    ),
    report: &mut crate::data::verify::VerifyReport,
    tolerance: i64,
    hint: &str,
) -> Result<Option<u64>> {
    let mut in_flight = None;
    for round in 1..=5 {
        let mut s = stream.lock().await;
        s.catch_up(&|_, _| {})
            .await
            .map_err(|e| Error::failed(e, hint))?;
        let still = crate::data::verify::recheck(src, dst, &report.differing, tolerance)
            .await
            .map_err(|e| Error::failed(e, hint))?;
        let counts = key_counts(src, dst)
            .await
            .map_err(|e| Error::failed(e, hint))?;
        // Every change made before this PING is in the pending set once it is answered; the set was
        // empty after the catch-up above.
        let counted_in_flight = if counts.values().any(|(a, b)| a != b) {
            s.capture
                .confirm_received(std::time::Duration::from_secs(5))
                .await
                .ok()
                .map(|()| s.capture.status().pending)
        } else {
            Some(0)
        };
        drop(s);
        ctx.note(format!(
            "re-check {round}: {} of {} differing keys still differ after catching up",
            still.len(),
            report.differing.len()
        ));
        report.differing = still
            .iter()
            .map(|m| (m.db, m.key.clone().into_bytes()))
            .collect();
        report.mismatch_count = still.len() as u64;
        report.mismatches = still.into_iter().take(20).collect();
        report.key_counts = counts;
        in_flight = counted_in_flight;
        if report.passed()
            || report.mismatch_count == 0 && counts_explained(&report.key_counts, in_flight)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(in_flight)
}

/// Each database's key count and the values, checked; a difference not explained by writes in flight
/// fails the step.
fn judge(
    ctx: &StepContext,
    report: &crate::data::verify::VerifyReport,
    in_flight: Option<u64>,
    mode_text: &str,
) -> Result<()> {
    let explained = counts_explained(&report.key_counts, in_flight);
    for (db, (s, t)) in &report.key_counts {
        let detail = match in_flight {
            Some(n) if s != t && explained => format!(
                "source {s}, target {t}: within the {n} key(s) the source changed while they were counted (the stream copies them)"
            ),
            _ => format!("source {s}, target {t}"),
        };
        ctx.check(&format!("db{db}_key_count"), s == t || explained, detail);
    }
    ctx.check(
        "values",
        report.mismatch_count == 0,
        format!(
            "{} keys compared ({mode_text}), {} differ",
            report.keys_compared, report.mismatch_count
        ),
    );
    if !(report.passed() || explained && report.mismatch_count == 0) {
        let first: Vec<String> = report
            .mismatches
            .iter()
            .take(5)
            .map(|m| format!("db{} {}: {}", m.db, m.key, m.reason))
            .collect();
        return Err(Error::failed(
            format!(
                "the target differs from the source: {}",
                if first.is_empty() {
                    "key counts differ".into()
                } else {
                    first.join("; ")
                }
            ),
            "writes made after the backup are not copied without stream_copy; stop writes, or add a stream_copy step, then run again",
        ));
    }
    Ok(())
}
