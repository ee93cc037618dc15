//! `fleet cutover DIR`: release the postponed cutover of every plan of the fleet waiting at it, exactly
//! as `ecmigrate cutover PLAN` releases one (the release file the waiting run consumes), then follow
//! every switch at once.

use std::path::Path;
use std::time::Duration;

use crate::engine::state::StatePaths;
use crate::error::{Error, Result};
use crate::fleet::status::GroupStatus;
use crate::steps::cutover::release::{self, Followed};

/// How one released cutover ended.
pub struct Released {
    pub status: GroupStatus,
    pub followed: Result<Followed>,
}

/// Release every plan of `waiting` (each a group [`GroupStatus::is_waiting`]) and follow the switches
/// until each is made, fails, waits again, or `limit` passes.
pub async fn release_all(
    dir: &Path,
    waiting: Vec<GroupStatus>,
    state_dir: &Path,
    limit: Duration,
) -> Result<Vec<Released>> {
    // Every plan is loaded and checked before any release is written, so a plan that cannot be released
    // leaves every one unreleased (the error says so truthfully); then every release is written before
    // any is followed: the switches run together.
    let mut ready = Vec::new();
    for status in waiting {
        let file = status.plan_path(dir).expect("a waiting group has a plan");
        let plan = crate::plan::load(&file)?;
        let Some((index, _)) = plan.plan.cutover_step() else {
            return Err(Error::usage(
                format!("plan {} has no cutover step", file.display()),
                "nothing was released",
            ));
        };
        let paths = StatePaths::new(state_dir, &plan.plan.name);
        let before = release::attempts(paths.load()?.as_ref(), index).len();
        ready.push((status, plan, paths, index, before));
    }
    let mut released = Vec::new();
    for (status, plan, paths, index, before) in ready {
        let (_, spec) = plan.plan.cutover_step().expect("checked above");
        release::release(&paths, &plan, spec)?;
        released.push((status, paths, index, before));
    }
    let follows = released.into_iter().map(|(status, paths, index, before)| {
        tokio::spawn(async move {
            let followed = release::follow(&paths, index, before, limit).await;
            Released { status, followed }
        })
    });
    let mut out = Vec::new();
    for task in follows.collect::<Vec<_>>() {
        out.push(task.await.map_err(|e| {
            Error::failed(
                format!("internal: following a cutover ended abnormally: {e}"),
                "see `ecmigrate fleet status DIR`",
            )
        })?);
    }
    Ok(out)
}
