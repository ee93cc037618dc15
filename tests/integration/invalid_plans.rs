//! Every fixture under tests/plans/invalid is refused with exit 2 and a message naming its field, by
//! `plan validate` and by `run`, and the sandbox is left exactly as it was.

use std::path::PathBuf;

use crate::harness::Env;

fn fixtures() -> Vec<(PathBuf, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/plans/invalid");
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let field = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect-field:"))
                .unwrap_or_else(|| panic!("{} lacks `# expect-field:`", p.display()))
                .trim()
                .to_string();
            (p, field)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn at_least_twenty_invalid_plans_are_refused_with_exit_2_naming_the_field() {
    let env = Env::new();
    env.sandbox_with_source(20);
    let before = env
        .sandbox_files()
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap_or_default()))
        .collect::<Vec<_>>();
    let status_before = env.sandbox_status();
    let all = fixtures();
    assert!(all.len() >= 20, "only {} invalid fixtures", all.len());
    for (path, field) in &all {
        let p = path.to_str().unwrap();
        for args in [
            vec!["plan", "validate", p],
            vec!["run", p, "--yes"],
            vec!["run", p, "--dry-run"],
        ] {
            let r = env.run(&args);
            assert_eq!(r.code, 2, "{args:?}: {r:?}");
            assert!(
                r.stderr.contains(field.as_str()),
                "{args:?} does not name `{field}`: {r:?}"
            );
            assert!(r.stderr.contains("hint:"), "{r:?}");
        }
    }
    let after = env
        .sandbox_files()
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap_or_default()))
        .collect::<Vec<_>>();
    assert_eq!(before.len(), after.len());
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.0 == b.0 && (a.0.to_string_lossy().ends_with(".log") || a.1 == b.1))
    );
    assert_eq!(env.sandbox_status(), status_before);
    assert!(
        !env.state_dir().exists(),
        "an invalid plan left state behind"
    );
}

#[test]
fn the_valid_fixtures_and_the_demo_plan_validate() {
    let env = Env::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for p in [
        "tests/plans/valid/full.yaml",
        "tests/plans/valid/minimal.yaml",
        "plans/sandbox-demo.yaml",
    ] {
        let r = env.run(&["plan", "validate", root.join(p).to_str().unwrap()]);
        assert_eq!(r.code, 0, "{p}: {r:?}");
    }
    let schema = env.ok(&["plan", "schema"]);
    let v: serde_json::Value = serde_json::from_str(&schema.stdout).expect("schema is JSON");
    let text = v.to_string();
    for kind in ecmigrate::plan::StepKind::ALL.map(|k| k.as_str()) {
        assert!(text.contains(kind), "schema lacks {kind}");
    }
}
