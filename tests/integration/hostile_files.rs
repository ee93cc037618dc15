//! Files the run depends on that are not what they should be: a token file others can read, a secrets
//! folder anyone can write, and a state folder on a nearly full disk.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::harness::{Env, full_plan};

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_token_file_others_can_read_or_a_folder_anyone_can_write_is_refused() {
    let env = Env::new();
    env.sandbox_with_source(50);
    let token = env.token_file();
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    std::fs::write(&token, "an-existing-token-0123456789").unwrap();
    set_mode(&token, 0o644);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let refused = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("mode 0644"), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains(&format!("chmod 600 {}", token.display())),
        "{refused:?}"
    );
    assert!(
        !refused
            .all_output()
            .contains("an-existing-token-0123456789"),
        "the token was echoed"
    );

    set_mode(&token, 0o600);
    set_mode(token.parent().unwrap(), 0o777);
    let refused = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.stderr.contains("writable by everyone"),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("chmod o-w"), "{refused:?}");
    assert_eq!(
        env.sandbox_status()["groups"].as_array().unwrap().len(),
        1,
        "something was created"
    );
}

/// A small tmpfs the test mounts (root only), unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_nearly_full_state_folder_never_ends_done_with_a_cut_journal() {
    let env = Env::new();
    let state = env.path().join("small-state");
    let Some(_tmpfs) = Tmpfs::mount(&state, "256k") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root; this machine refused it");
        return;
    };
    env.sandbox_with_source(300);
    // Leave about 12 KiB free: less than a whole run's state, journal and report need (~40 KiB).
    std::fs::write(state.join("filler"), vec![0u8; (256 - 12) * 1024]).unwrap();
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let state_arg = state.to_str().unwrap();
    let first = env.run(&[
        "--state-dir",
        state_arg,
        "run",
        plan.to_str().unwrap(),
        "--yes",
    ]);
    let journal =
        std::fs::read_to_string(state.join("orders-migration/events.jsonl")).unwrap_or_default();
    for line in journal.lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("a cut journal line ({e}): {line:?}"));
    }
    if first.code == 0 {
        let last: Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
        assert_eq!(
            last["event"], "run_finished",
            "exit 0 without the journal's end"
        );
        assert!(state.join("orders-migration/report.md").exists());
    } else {
        assert_eq!(first.code, 1, "{first:?}");
        assert!(first.stderr.contains("hint:"), "{first:?}");
    }
    assert_ne!(
        first.code, 0,
        "the disk was too small for the run, yet it ended done"
    );

    // Space again: the same command finishes, journal and evidence pack complete.
    std::fs::remove_file(state.join("filler")).unwrap();
    let resumed = env.run(&[
        "--state-dir",
        state_arg,
        "run",
        plan.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let journal = std::fs::read_to_string(state.join("orders-migration/events.jsonl")).unwrap();
    let last: Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["state"], "done");
    assert!(state.join("orders-migration/report.md").exists());
    assert!(state.join("orders-migration/report.json").exists());
}
