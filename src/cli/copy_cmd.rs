//! `ecmigrate copy SRC_URL DST_URL [--live]`: the plan's copier alone, between any two Redis endpoints.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::data::capture::{Capture, detect_style};
use crate::data::copier::{Copier, CopyOptions, DEFAULT_BATCH, DEFAULT_CONCURRENCY};
use crate::data::stream::StreamCopy;
use crate::error::{Error, Result, exit_code};
use crate::ui::OutputFormat;

use super::endpoints::EndpointArgs;

#[derive(Args, Debug)]
pub struct CopyArgs {
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// Keep copying changes (keyspace notifications) until interrupted (Ctrl-C), then catch up and exit.
    #[arg(long)]
    pub live: bool,
    /// Batches in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY as u16, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Keys per pipelined batch.
    #[arg(long, default_value_t = DEFAULT_BATCH as u32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Keys larger than this (bytes, estimated) are copied type-wise in chunks.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_restore_bytes: u64,
    /// Copy only the keys of these primaries of a cluster source: 0-based indexes in slot order, comma
    /// separated (`0,2`). Not with --live, whose reconcile judges every key.
    #[arg(long, value_delimiter = ',', num_args = 1.., conflicts_with = "live")]
    pub source_shards: Option<Vec<usize>>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Peak resident set size of this process, in KiB.
pub fn peak_rss_kb() -> u64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
        usage.ru_maxrss.max(0) as u64
    } else {
        0
    }
}

pub async fn run(args: CopyArgs) -> Result<i32> {
    let (src, dst) = args.endpoints.resolve()?;
    let options = CopyOptions {
        concurrency: args.concurrency as usize,
        batch: args.batch as usize,
        max_restore_bytes: args.max_restore_bytes,
        ..CopyOptions::default()
    };
    let mut copier = Copier::new(src.clone(), dst, options);
    if let Some(shards) = args.source_shards.clone() {
        copier = copier.with_source_shards(shards);
    }
    let copier = Arc::new(copier);
    let text = args.output == OutputFormat::Text;
    let (src_topology, dst_topology) = copier.topologies().await.map_err(|e| match e {
        crate::data::DataError::NoSuchShard { .. } => Error::usage(
            format!("--source-shards: {e}"),
            "list indexes of the source's primaries, from 0, in slot order",
        ),
        other => Error::failed(
            other,
            "check both URLs, the CA file and the password variables",
        ),
    })?;
    if text {
        eprintln!(
            "source: {}; target: {}",
            src_topology.describe(),
            dst_topology.describe()
        );
    }
    let bar = (text && crate::ui::stdout_is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(crate::ui::progress_style(
            "{bar:30} {human_pos}/{human_len} keys ({rate}, eta {eta}) {msg}",
        ));
        b
    });
    let progress = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let fail = |e: crate::data::DataError| {
        Error::failed(e, "check both URLs, the CA file and the password variables")
    };
    let started = Instant::now();
    let (mut replayed, mut reconciles) = (0, 0);
    if args.live {
        (replayed, reconciles) = live_copy(&src, &copier, text, bar.as_ref(), &progress).await?;
    } else {
        copier.copy_all(&progress).await.map_err(fail)?;
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    let counts = copier.stats.counts();
    let summary = json!({
        "keys_copied": counts.keys_copied,
        "keys_deleted": counts.keys_deleted,
        "big_keys": counts.big_keys,
        "oversized_batches": counts.oversized_batches,
        "changes_replayed": replayed,
        "reconcile_passes": reconciles,
        "seconds": seconds,
        "source_primaries": src_topology.shards.len(),
        "target_primaries": dst_topology.shards.len(),
        "keys_per_sec": if seconds > 0.0 { counts.keys_scanned as f64 / seconds } else { 0.0 },
        "peak_rss_kb": peak_rss_kb(),
    });
    match args.output {
        OutputFormat::Json => println!("{summary}"),
        OutputFormat::Text => println!(
            "copied {} keys ({} deleted, {} big) in {seconds:.2}s: {:.0} keys/s; peak RSS {} MiB",
            counts.keys_copied,
            counts.keys_deleted,
            counts.big_keys,
            summary["keys_per_sec"].as_f64().unwrap_or(0.0),
            peak_rss_kb() / 1024
        ),
    }
    Ok(exit_code::OK)
}

/// `--live`: capture the source's changes, copy everything, then replay changes until Ctrl-C and catch
/// up. Returns the changes replayed and the reconcile passes.
async fn live_copy(
    src: &crate::data::connect::RedisEndpoint,
    copier: &Arc<Copier>,
    text: bool,
    bar: Option<&indicatif::ProgressBar>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(u64, u64)> {
    let fail = |e: crate::data::DataError| {
        Error::failed(e, "check both URLs, the CA file and the password variables")
    };
    let style = detect_style(src, true).await.map_err(|e| {
        Error::failed(e, "enable keyspace notifications on the source: notify-keyspace-events KEA (on ElastiCache, in a custom parameter group)")
    })?;
    let spill =
        std::env::temp_dir().join(format!("ecmigrate-capture-{}.spill", std::process::id()));
    let capture = Capture::start(src.clone(), style, spill, 1_000_000)
        .await
        .map_err(fail)?;
    let mut stream = StreamCopy::new(copier.clone(), capture);
    stream.reconcile(&progress).await.map_err(fail)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if text {
        eprintln!("initial copy done; tailing changes until Ctrl-C");
    }
    let tick = |s: &crate::data::stream::StreamStatus| {
        if text && crate::ui::stdout_is_terminal() {
            eprint!(
                "\r{} changes replayed, {} pending (oldest {} ms)   ",
                s.replayed, s.capture.pending, s.capture.oldest_pending_ms
            );
        }
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    stream
        .tail_until(stop, &tick, &progress)
        .await
        .map_err(fail)?;
    stream.capture.stop();
    Ok((stream.replayed, stream.reconciles))
}
