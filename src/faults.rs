//! Fault injection for the integration tests, compiled only with the `test-hooks` feature (never in a
//! release build): the tests drive the real binary and steer its faults through the environment.
//!
//! - `ECMIGRATE_TEST_FENCE_DELAY=MS:N`: the first N write fences sleep MS milliseconds inside the pause.
//! - `ECMIGRATE_TEST_CLOUD_FAULTS=Op=kind*N,...`: the first N calls of cloud operation `Op`
//!   (`CreateSnapshot`, `CreateReplicationGroup`, `DescribeReplicationGroups`, …) fail with `kind`
//!   (`transient` or `fail`), through [`crate::cloud::faults::FaultyCloud`].

use std::time::Duration;

/// The delay the test asked for inside fence `attempt` (1-based).
pub fn fence_delay(attempt: u32) -> Option<Duration> {
    let spec = std::env::var("ECMIGRATE_TEST_FENCE_DELAY").ok()?;
    let (ms, times) = spec.split_once(':')?;
    (attempt <= times.parse().ok()?).then(|| Duration::from_millis(ms.parse().unwrap_or(0)))
}

/// The cloud faults the test asked for, as `(operation, kind, times)`.
pub fn cloud_faults() -> Vec<(String, String, u32)> {
    let Ok(spec) = std::env::var("ECMIGRATE_TEST_CLOUD_FAULTS") else {
        return Vec::new();
    };
    spec.split(',')
        .filter_map(|item| {
            let (op, rest) = item.trim().split_once('=')?;
            let (kind, times) = rest.split_once('*').unwrap_or((rest, "1"));
            Some((op.to_string(), kind.to_string(), times.parse().ok()?))
        })
        .collect()
}
