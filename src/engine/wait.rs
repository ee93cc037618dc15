//! Bounded waits for the cloud: poll a probe until it is ready, report every change of status, back off
//! on transient errors, and fail (resumably) past the bound.

use std::time::{Duration, Instant};

use crate::engine::StepContext;
use crate::error::{Error, Result};

/// One answer of a wait probe.
pub enum Poll<T> {
    Ready(T),
    /// Not yet; the cloud's current status.
    Pending(String),
    /// Will never be ready.
    Failed(String),
}

/// Poll `probe` until it yields a value, bounded by `timeout`; transient cloud errors back off and retry.
pub async fn wait_until<T, F, Fut>(
    ctx: &StepContext,
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Poll<T>, crate::cloud::CloudError>>,
{
    let started = Instant::now();
    let mut interval = Duration::from_millis(200);
    let mut transient_failures = 0u32;
    let mut last_status = String::from("not seen yet");
    loop {
        match probe().await {
            Ok(Poll::Ready(v)) => return Ok(v),
            Ok(Poll::Pending(status)) => {
                transient_failures = 0;
                ctx.waiting(what, &status, started);
                last_status = status;
            }
            Ok(Poll::Failed(message)) => {
                return Err(Error::failed(
                    format!("{what}: {message}"),
                    "see the cloud's events for the cause; fix it and run again to resume",
                ));
            }
            Err(e) if e.is_transient() && transient_failures < 20 => {
                transient_failures += 1;
                ctx.waiting(what, "retrying after a transient error", started);
            }
            Err(e) => {
                return Err(Error::failed(
                    format!("{what}: {e}"),
                    "run the same command again to resume; it picks up what was already created",
                ));
            }
        }
        if started.elapsed() >= timeout {
            return Err(Error::failed(
                format!(
                    "{what}: still `{last_status}` after {}s (the step's bound)",
                    timeout.as_secs()
                ),
                format!(
                    "check it in the cloud ({}); run the same command again to keep waiting, or raise `timeout_seconds` in the step",
                    if ctx.plan.plan.provider == crate::plan::Provider::Aws {
                        "the ElastiCache console or `aws elasticache describe-*`"
                    } else {
                        "`ecmigrate sandbox status`"
                    }
                ),
            ));
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(if ctx.plan.plan.provider == crate::plan::Provider::Aws {
            Duration::from_secs(15)
        } else {
            Duration::from_secs(1)
        });
    }
}
