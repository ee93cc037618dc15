//! Fault injection for the integration tests, compiled only with the `test-hooks` feature (never in a
//! release build): the tests drive the real binary and steer its faults through the environment.
//!
//! - `ECMIGRATE_TEST_CRASH_AFTER=WHAT`: the process dies (as by SIGKILL: no destructor, no further write)
//!   right after the journal has kept the event `WHAT`: `call:<Operation>` (a mutating call about to be
//!   made, e.g. `call:CreateSnapshot`; `#N` picks the Nth such call, e.g. `call:CreateSnapshot#2`) or
//!   `<event>:<step>` (e.g. `step_started:cutover`, `step_done:backup`).
//! - `ECMIGRATE_TEST_FENCE_DELAY=MS:N`: the first N write fences sleep MS milliseconds inside the pause.
//! - `ECMIGRATE_TEST_CLOUD_FAULTS=Op=kind*N,...`: the first N calls of cloud operation `Op`
//!   (`CreateSnapshot`, `CreateReplicationGroup`, `DescribeReplicationGroups`, …) fail with `kind`
//!   (`transient`, `fail`, or `crash-after`: the Nth call is made, then the process dies), through [`crate::cloud::faults::FaultyCloud`].

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

/// Die right after the journal kept the event the test named (`ECMIGRATE_TEST_CRASH_AFTER`); `name` is the
/// journal's name of the event (`call:CreateSnapshot`, `step_started:cutover`, …).
pub fn crash_after(name: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEEN: AtomicU32 = AtomicU32::new(0);
    let Ok(spec) = std::env::var("ECMIGRATE_TEST_CRASH_AFTER") else {
        return;
    };
    let (what, nth) = match spec.split_once('#') {
        Some((w, n)) => (w, n.parse().unwrap_or(1)),
        None => (spec.as_str(), 1),
    };
    if name == what && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        // SAFETY: _exit ends the process at once, as a kill would; nothing after it runs.
        unsafe { libc::_exit(137) };
    }
}
