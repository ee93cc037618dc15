//! Test hooks of the sandbox, compiled only with the `test-hooks` feature (never in a release build): the
//! integration tests drive the real binary and pick, through the environment, a point at which to kill it.
//!
//! - `ECMIGRATE_TEST_SANDBOX_HOLD=POINT[,POINT...]`: at POINT the process waits (up to [`HOLD_LIMIT`], then
//!   goes on), so a test can see the state it left and SIGKILL it there. Points:
//!   - `snapshot_requested`: the snapshot is registered `creating`, its file not yet written;
//!   - `delete_requested`: the group is registered `deleting`, its processes still run;
//!   - `restore_loaded`: a restore by copy has a snapshot's RDB loaded into its stand-alone server, no key
//!     copied yet.

use std::time::Duration;

/// Bounded, so a test that forgets to kill the process still ends.
const HOLD_LIMIT: Duration = Duration::from_secs(120);

/// Hold here when the test asked for `point`.
pub async fn hold(point: &str) {
    let Ok(spec) = std::env::var("ECMIGRATE_TEST_SANDBOX_HOLD") else {
        return;
    };
    if spec.split(',').any(|p| p.trim() == point) {
        eprintln!("test hook: holding at `{point}` for up to {HOLD_LIMIT:?}");
        tokio::time::sleep(HOLD_LIMIT).await;
    }
}
