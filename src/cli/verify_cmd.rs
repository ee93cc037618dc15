//! `ecmigrate verify SRC_URL DST_URL [--full]`: compare two endpoints by type, value and TTL.

use clap::Args;
use serde_json::json;

use crate::data::copier::{DEFAULT_BATCH, DEFAULT_CONCURRENCY};
use crate::data::verify::{VerifyMode, VerifyOptions, verify_with};
use crate::error::{Error, Result, exit_code};
use crate::ui::OutputFormat;

use super::endpoints::EndpointArgs;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// Compare every key (default: a sample).
    #[arg(long)]
    pub full: bool,
    /// Keys sampled per database without --full.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub sample: u64,
    /// TTLs may differ by this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub ttl_tolerance_ms: u64,
    /// Batches in flight at once with --full (as `ecmigrate copy --concurrency`).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY as u16, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Keys per pipelined batch with --full (as `ecmigrate copy --batch`).
    #[arg(long, default_value_t = DEFAULT_BATCH as u32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

pub async fn run(args: VerifyArgs) -> Result<i32> {
    let (src, dst) = args.endpoints.resolve()?;
    let mode = if args.full {
        VerifyMode::Full
    } else {
        VerifyMode::Sample(args.sample)
    };
    let options = VerifyOptions {
        concurrency: args.concurrency as usize,
        batch: args.batch as usize,
        ..VerifyOptions::default()
    };
    let tolerance = args.ttl_tolerance_ms as i64;
    let report = verify_with(&src, &dst, mode, tolerance, &options, &|_, _| {})
        .await
        .map_err(|e| Error::failed(e, "check both URLs, the CA file and the password variables"))?;
    let passed = report.passed();
    match args.output {
        OutputFormat::Json => {
            let counts: serde_json::Map<String, serde_json::Value> = report
                .key_counts
                .iter()
                .map(|(db, (s, t))| (format!("db{db}"), json!({ "source": s, "target": t })))
                .collect();
            println!(
                "{}",
                json!({
                    "passed": passed,
                    "keys_compared": report.keys_compared,
                    "mismatch_count": report.mismatch_count,
                    "key_counts": counts,
                    "mismatches": report.mismatches,
                    "ttl_check": report.ttl_check,
                })
            );
        }
        OutputFormat::Text => {
            for (db, (s, t)) in &report.key_counts {
                println!(
                    "db{db}: source {s} keys, target {t} keys{}",
                    if s == t { "" } else { "  <- differ" }
                );
            }
            println!(
                "{} keys compared, {} differ",
                report.keys_compared, report.mismatch_count
            );
            for m in &report.mismatches {
                println!("  db{} {}: {}", m.db, m.key, m.reason);
            }
            if let Some(how) = &report.ttl_check {
                println!("TTLs: {how}");
            }
        }
    }
    if passed {
        Ok(exit_code::OK)
    } else {
        Err(Error::failed(
            format!(
                "the endpoints differ: {} keys, or the key counts",
                report.mismatch_count
            ),
            "copy again (ecmigrate copy), or keep a live copy running until the writes stop",
        ))
    }
}
