//! The rules of a plan that changes its source in place (no `target`): which steps it may list, the
//! store `source.auth_token` names for `rotate_auth_token`, and the fields of a step that holds.

use super::{Findings, check_path};
use crate::plan::rules;
use crate::plan::types::*;

/// `source.auth_token`: the store `rotate_auth_token` reads the current token from and writes the new
/// one to, so one ecmigrate can write (a file or a secret), holding an existing token (no `generate`).
pub(super) fn check_source_auth_token(plan: &Plan, f: &mut Findings) {
    let rotates = plan
        .steps
        .iter()
        .any(|s| matches!(s, StepSpec::RotateAuthToken(_)));
    let migrates = plan
        .steps
        .iter()
        .any(|s| matches!(s, StepSpec::MigrateToRbac(_)));
    match (&plan.source.auth, migrates) {
        (Some(auth), _) => {
            super::rbac::check_rbac("source.auth.rbac", &auth.rbac, f);
            if !migrates {
                f.add(
                    "source.auth",
                    "is only used by a `migrate_to_rbac` step; leave it out",
                );
            }
        }
        (None, true) => f.add(
            "source.auth",
            "is required with `migrate_to_rbac`: `rbac:` with the users and the user group to move the source to",
        ),
        (None, false) => {}
    }
    let Some(spec) = &plan.source.auth_token else {
        if rotates {
            f.add(
                "source.auth_token",
                "is required with `rotate_auth_token`: where the current token is kept (`file: PATH` or `secrets_manager: NAME`); the new one is written there",
            );
        }
        return;
    };
    if !rotates && !migrates {
        f.add(
            "source.auth_token",
            "is only used by `rotate_auth_token` (and by `migrate_to_rbac`, to prove the old token is refused afterwards); leave it out",
        );
    }
    if !rotates {
        // `migrate_to_rbac` only reads it: any store will do.
        if spec.generate {
            f.add(
                "source.auth_token.generate",
                "is not allowed on the source: the store holds the current token",
            );
        }
        return;
    }
    if spec.generate {
        f.add(
            "source.auth_token.generate",
            "is not allowed on the source: the store holds the current token, and `rotate_auth_token` generates the new one itself",
        );
    }
    match (&spec.file, &spec.env, &spec.secrets_manager) {
        (Some(file), None, None) => check_path(f, "source.auth_token.file", file),
        (None, None, Some(id)) => {
            f.check("source.auth_token.secrets_manager", rules::check_secret_id(id))
        }
        (_, Some(_), _) => f.add(
            "source.auth_token.env",
            "cannot receive the rotated token (an environment variable is not a store ecmigrate can write); use `file: PATH` or `secrets_manager: NAME`",
        ),
        _ => f.add(
            "source.auth_token",
            "needs exactly one store: `file: PATH` or `secrets_manager: NAME`",
        ),
    }
}

/// The steps an in-place plan (no `target`) may list: `preflight`, `enable_transit` and
/// `rotate_auth_token`, one of the last two required; and the steps a migration (with `target`) may not.
pub(super) fn check_in_place_steps(plan: &Plan, seen: &[(StepKind, usize)], f: &mut Findings) {
    for (kind, i) in seen {
        if !IN_PLACE_STEPS.contains(kind) {
            f.add(
                format!("steps[{i}].kind"),
                format!(
                    "`{kind}` needs a `target` (a plan without `target` changes the source in place and may only list `preflight`, `enable_transit`, `rotate_auth_token` and `migrate_to_rbac`)"
                ),
            );
        }
    }
    let migrates = seen.iter().any(|(k, _)| *k == StepKind::MigrateToRbac);
    if plan.in_place_hold_step(0).is_none() && !migrates {
        f.add(
            "target",
            "is required unless the plan changes the source in place: give the new group's `target`, or list an `enable_transit`, `rotate_auth_token` or `migrate_to_rbac` step (then only `preflight` and those)",
        );
    }
}

/// The step kinds a plan without `target` may list.
pub(super) const IN_PLACE_STEPS: [StepKind; 4] = [
    StepKind::Preflight,
    StepKind::EnableTransit,
    StepKind::RotateAuthToken,
    StepKind::MigrateToRbac,
];

/// The fields of an in-place step that waits for modifications and holds for the operator.
pub(super) fn check_hold_fields(
    timeout_seconds: Option<u64>,
    flag_file: Option<&str>,
    at: &dyn Fn(&str) -> String,
    f: &mut Findings,
) {
    if let Some(t) = timeout_seconds {
        f.check(at("timeout_seconds"), rules::check_range(t, 60, 86400));
    }
    if flag_file.is_some_and(|v| v.trim().is_empty()) {
        f.add(
            at("postpone_flag_file"),
            "must not be empty; leave the field out instead",
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::plan::parse_str;

    fn fields_refused(text: &str) -> Vec<String> {
        match parse_str(text, "plan.yaml") {
            Ok(_) => panic!("should be refused:\n{text}"),
            Err(Error::InvalidPlan { issues }) => issues.into_iter().map(|i| i.field).collect(),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    const ROTATE: &str = "version: 1\nname: t\nsource:\n  replication_group_id: orders\n  auth_token: { file: t.token }\nsteps:\n  - kind: preflight\n  - kind: rotate_auth_token\n";

    #[test]
    fn a_rotation_needs_a_writable_store_of_the_current_token() {
        let plan = parse_str(ROTATE, "plan.yaml").expect("a rotation plan");
        assert!(plan.is_in_place());
        assert_eq!(plan.in_place_hold_step(0).map(|s| s.0), Some(1));
        let without = ROTATE.replace("  auth_token: { file: t.token }\n", "");
        assert_eq!(fields_refused(&without), ["source.auth_token"]);
        let env = ROTATE.replace("{ file: t.token }", "{ env: TOKEN }");
        assert_eq!(fields_refused(&env), ["source.auth_token.env"]);
        let generate = ROTATE.replace("{ file: t.token }", "{ generate: true, file: t.token }");
        assert_eq!(fields_refused(&generate), ["source.auth_token.generate"]);
        let secret = ROTATE.replace("{ file: t.token }", "{ secrets_manager: orders/auth }");
        parse_str(&secret, "plan.yaml").expect("a secret is a store ecmigrate can write");
    }

    #[test]
    fn the_source_token_is_only_for_a_rotation_and_a_rotation_only_in_place() {
        let unused = ROTATE.replace(
            "  - kind: rotate_auth_token\n",
            "  - kind: enable_transit\n",
        );
        assert_eq!(fields_refused(&unused), ["source.auth_token"]);
        let migration = ROTATE.replace(
            "steps:\n",
            "target:\n  replication_group_id: orders-enc\n  auth_token: { env: T }\nsteps:\n",
        );
        let fields = fields_refused(&migration);
        assert!(fields.contains(&"steps[1].kind".to_string()), "{fields:?}");
    }
}
