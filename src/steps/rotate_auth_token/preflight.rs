//! What `rotate_auth_token` needs before anything changes: a group with in-transit encryption (AUTH
//! needs it; or an `enable_transit` step before), an AUTH token to rotate, and the store
//! `source.auth_token` names holding a token that meets the AUTH rules and able to take the new one.

use crate::cloud::ReplicationGroup;
use crate::engine::StepContext;
use crate::plan::rules;
use crate::secret::TokenStore;
use crate::steps::preflight::Checks;
use crate::steps::read_token;

use super::versions::Versions;

pub(crate) async fn checks(
    ctx: &StepContext,
    g: &ReplicationGroup,
    transit_first: bool,
    c: &mut Checks<'_>,
) {
    let id = &g.id;
    match (g.transit_encryption_enabled, transit_first) {
        (true, _) => c.pass(
            "auth_needs_transit",
            format!("`{id}` has in-transit encryption, which AUTH needs"),
        ),
        (false, true) => c.pass(
            "auth_needs_transit",
            format!("`{id}` gets in-transit encryption from `enable_transit` first"),
        ),
        (false, false) => c.refuse(
            "auth_needs_transit",
            format!("`{id}` has no in-transit encryption, and ElastiCache takes an AUTH token only with it"),
            "add an `enable_transit` step before `rotate_auth_token`",
        ),
    }
    if g.auth_token_enabled {
        c.pass("auth_token_enabled", format!("`{id}` has an AUTH token"));
    } else {
        c.refuse(
            "auth_token_enabled",
            format!("`{id}` has no AUTH token to rotate (AuthTokenEnabled is false)"),
            "a group without a token gets one in a migration to a new group (a plan with `target`)",
        );
    }
    let versions = Versions::of(&ctx.plan);
    let store = versions.store();
    if let Err((problem, fix)) = store.check_permissions() {
        c.refuse("auth_token_store", problem, fix);
        return;
    }
    match read_token(ctx, &store).await {
        Ok(Some(token)) => match rules::check_auth_token(token.expose()) {
            Ok(()) => c.pass(
                "auth_token_store",
                format!("the current token is in {store}; the new one will be generated and kept there, pending first"),
            ),
            Err(rule) => c.refuse(
                "auth_token_store",
                format!("the token in {store} is not a valid AUTH token: {rule}"),
                "point source.auth_token at the store of the token the group uses now",
            ),
        },
        Ok(None) => c.refuse(
            "auth_token_store",
            format!("{store} holds no token"),
            "point source.auth_token at the store of the token the group uses now",
        ),
        Err(why) => c.refuse(
            "auth_token_store",
            why,
            "check the token store named in source.auth_token",
        ),
    }
    if let Versions::File(path) = &versions
        && let Err(why) = TokenStore::File(path.clone()).check_writable()
    {
        c.refuse(
            "auth_token_writable",
            format!(
                "the new token cannot be kept beside {}: {why}",
                path.display()
            ),
            "make the token file's folder writable by this user",
        );
    }
}
