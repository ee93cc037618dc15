//! The conventions around the commands: shell completions that parse, man pages generated from the same
//! definitions, `--help` listing a command's own options before the global ones, and every example plan
//! in `plans/` valid.

use crate::harness::Env;

#[test]
fn completions_for_bash_parse_and_the_other_shells_name_every_command() {
    let env = Env::new();
    let bash = env.ok(&["completions", "bash"]);
    let script = env.path().join("ecmigrate.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = env.ok(&["completions", shell]).stdout;
        for command in ["run", "cutover", "rollback", "verify", "sandbox"] {
            assert!(out.contains(command), "{shell} completions lack {command}");
        }
    }
    let bad = env.run(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn man_pages_cover_the_top_command_and_each_subcommand() {
    let env = Env::new();
    let top = env.ok(&["man"]).stdout;
    assert!(top.contains(".TH ecmigrate 1"), "{top}");
    assert!(top.contains("cutover"), "{top}");
    let dir = env.path().join("man");
    std::fs::create_dir_all(&dir).unwrap();
    env.ok(&["man", "--out-dir", dir.to_str().unwrap()]);
    for page in ["ecmigrate.1", "ecmigrate-run.1", "ecmigrate-copy.1"] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let missing = env.run(&[
        "man",
        "--out-dir",
        env.path().join("nowhere").to_str().unwrap(),
    ]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("hint:"), "{missing:?}");
}

#[test]
fn copy_and_verify_help_list_their_own_options_before_the_global_ones() {
    let env = Env::new();
    for (command, own) in [("copy", "--concurrency"), ("verify", "--full")] {
        let help = env.ok(&[command, "--help"]).stdout;
        let own_at = help
            .find(own)
            .unwrap_or_else(|| panic!("{command}: {help}"));
        let global_at = help
            .find("Global options:")
            .unwrap_or_else(|| panic!("{command}: {help}"));
        let state_dir_at = help.find("--state-dir").unwrap();
        assert!(own_at < global_at && global_at < state_dir_at, "{help}");
    }
}

#[test]
fn every_example_plan_is_valid() {
    let env = Env::new();
    let plans = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    let mut checked = 0;
    for entry in std::fs::read_dir(&plans).unwrap() {
        let path = entry.unwrap().path();
        // The fleet policy example is no plan; src/fleet/policy.rs checks it.
        if path.extension().is_some_and(|e| e == "yaml") && !path.ends_with("fleet-policy.yaml") {
            let run = env.run(&["plan", "validate", path.to_str().unwrap()]);
            assert_eq!(run.code, 0, "{}: {run:?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} plans in {}", plans.display());
}
