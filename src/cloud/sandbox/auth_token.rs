//! AUTH token rotation in place, as ModifyReplicationGroup does it on ElastiCache, on the running nodes:
//! `ROTATE` adds the new token beside the old one (both open the group, as two passwords of the
//! `default` user), `SET` — allowed only after `ROTATE` — keeps only the new one. Both are `ACL SETUSER
//! default` and `CONFIG SET masterauth` on every node, and `redis.conf` is written again so a node
//! started later lets in the same tokens. Connections already authenticated stay open, as on
//! ElastiCache: only new ones are checked against the new tokens.

use super::Sandbox;
use super::process;
use crate::cloud::{AuthTokenUpdate, CloudError, CloudResult};
use crate::secret::Secret;

fn refused(message: String) -> CloudError {
    CloudError::invalid(message)
}

impl Sandbox {
    pub(super) async fn modify_auth(
        &self,
        id: &str,
        token: &Secret,
        strategy: AuthTokenUpdate,
    ) -> CloudResult<()> {
        let _work = self.group_lock(id, true)?;
        let g = self.group_rec(id)?;
        let status = self.live_status(id).await?;
        if status != "available" {
            return Err(refused(format!(
                "InvalidReplicationGroupState: replication group `{id}` is `{status}`, not `available`"
            )));
        }
        if !g.transit_encryption_enabled {
            return Err(refused(format!(
                "InvalidParameterCombination: `{id}` has no in-transit encryption; an AUTH token needs it"
            )));
        }
        crate::plan::rules::check_auth_token(token.expose())
            .map_err(|rule| refused(format!("InvalidParameterValue: AuthToken {rule}")))?;
        let now = g
            .nodes
            .first()
            .map(|n| process::read_passwords(&n.dir))
            .unwrap_or_default();
        let valid: Vec<&Secret> = match strategy {
            // Already let in (a request sent again): nothing changes.
            AuthTokenUpdate::Rotate if now.contains(token) => return Ok(()),
            AuthTokenUpdate::Rotate => now.last().into_iter().chain([token]).collect(),
            AuthTokenUpdate::Set if now.len() < 2 => {
                return Err(refused(format!(
                    "InvalidParameterCombination: AuthTokenUpdateStrategy SET is allowed only after ROTATE, and `{id}` has one token"
                )));
            }
            AuthTokenUpdate::Set => vec![token],
        };
        for node in &g.nodes {
            let mut con = self.connect_node(&g, node).await?;
            let mut acl = redis::cmd("ACL");
            acl.arg("SETUSER").arg("default").arg("on").arg("resetpass");
            for p in &valid {
                acl.arg(format!(">{}", p.expose()));
            }
            acl.query_async::<()>(&mut con).await.map_err(|e| {
                CloudError::other(format!("sandbox: node {}: ACL SETUSER: {e}", node.id))
            })?;
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("masterauth")
                .arg(token.expose())
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| {
                    CloudError::other(format!("sandbox: node {}: CONFIG SET: {e}", node.id))
                })?;
            process::write_passwords(&node.dir, &valid)?;
        }
        Ok(())
    }
}
