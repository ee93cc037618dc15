//! `stream_copy`: streaming key copy with change capture. Not built in this version: the step is
//! validated and recorded as skipped, and says plainly that writes made after the snapshot are not copied.

use serde_json::json;

use crate::engine::StepContext;
use crate::error::Result;
use crate::plan::StreamCopyStep;
use crate::steps::{StepOutcome, obj};

pub async fn run(ctx: &StepContext, _spec: &StreamCopyStep) -> Result<StepOutcome> {
    ctx.note(
        "stream_copy is not available in this version: writes made to the source after the backup are not \
         copied; stop writes to the source before `backup` or expect `verify` to report the differences",
    );
    Ok(StepOutcome {
        outputs: obj(vec![("mode", json!("not_available"))]),
        skipped: true,
    })
}
