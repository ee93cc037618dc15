//! Plan paths and plan texts that are no plan — `/dev/zero`, a FIFO, a directory, a file over the
//! cap, a key given twice, two documents, deep nesting, 10,000 steps, a non-ASCII name — are refused
//! by the real binary with exit 2 and a message in the plan's terms, at once and in little memory.
//!
//! Each run is bounded: its address space is capped (a binary that reads `/dev/zero` fails instead of
//! eating the machine), it is killed past a deadline (a binary that waits on a FIFO fails instead of
//! hanging the suite), and its peak memory is read back from the kernel.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::Env;

/// The address space a refused plan may take: far above what ecmigrate needs (about 30 MiB resident),
/// far below what reading `/dev/zero` takes.
const ADDRESS_SPACE: u64 = 1 << 30;
/// Past this the run is killed and the test fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// A refusal before reading is this quick.
const AT_ONCE: Duration = Duration::from_secs(1);
/// The peak resident memory of a refusal (ecmigrate itself is about 30 MiB).
const MAX_RSS_KIB: i64 = 100 * 1024;

struct Bounded {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    max_rss_kib: i64,
}

impl std::fmt::Debug for Bounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} after {:?}, peak {} KiB\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.elapsed, self.max_rss_kib, self.stdout, self.stderr
        )
    }
}

/// Run ecmigrate with its address space capped, killed past [`DEADLINE`], and its peak memory measured.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4 (which also reports its peak memory), or killed and waited"
)]
fn run_bounded(env: &Env, args: &[&str]) -> Bounded {
    let mut cmd = env.command(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start ecmigrate");
    let pid = child.id() as libc::pid_t;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // wait4, not Child::wait: it also reports the child's peak resident memory.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break (status, usage);
        }
        let failed = (reaped != 0).then(std::io::Error::last_os_error);
        if failed.is_some() || started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            match failed {
                Some(e) => panic!("wait4 on ecmigrate {args:?}: {e}"),
                None => panic!("ecmigrate {args:?} still ran after {DEADLINE:?} and was killed"),
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Bounded {
        code,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        elapsed,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// Exit 2, stderr holding `line` as a line of its own, and the plan's hint; quick and small.
fn assert_refused(r: &Bounded, line: &str, within: Duration) {
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.lines().any(|l| l == line),
        "no line\n{line}\nin {r:?}"
    );
    assert!(r.stderr.contains("\nhint: "), "{r:?}");
    assert!(r.elapsed < within, "took {:?}: {r:?}", r.elapsed);
    assert!(
        r.max_rss_kib < MAX_RSS_KIB,
        "peak {} KiB: {r:?}",
        r.max_rss_kib
    );
}

/// Every command that reads a plan, on `plan`.
fn plan_commands(plan: &str) -> Vec<Vec<&str>> {
    vec![
        vec!["plan", "validate", plan],
        vec!["run", plan, "--dry-run"],
        vec!["run", plan, "--yes"],
        vec!["status", plan],
        vec!["cutover", plan, "--no-wait"],
        vec!["rollback", plan, "--yes"],
    ]
}

/// A valid plan's head, up to and including `steps:`.
const HEAD: &str = "version: 1
name: orders
provider: sandbox
source:
  replication_group_id: orders
target:
  replication_group_id: orders-enc
  kms_key_id: alias/orders
  auth_token: { env: TOKEN }
steps:
";

const STEPS: &str = "  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
";

/// Write `text` as a plan and validate it: refused with the issue line `<path><after_path>`; the run
/// is returned for further checks.
fn refuse_text(text: &str, after_path: &str) -> Bounded {
    let env = Env::new();
    let plan = env.write_plan("plan.yaml", text);
    let r = run_bounded(&env, &["plan", "validate", plan.to_str().unwrap()]);
    assert_refused(&r, &format!("  {}{after_path}", plan.display()), AT_ONCE);
    r
}

#[test]
fn dev_zero_is_refused_at_once_by_every_command_that_reads_a_plan() {
    let env = Env::new();
    for args in plan_commands("/dev/zero") {
        let r = run_bounded(&env, &args);
        assert_refused(
            &r,
            "  /dev/zero: `(file)`: a plan must be a regular file, and this is a character device; name the plan's YAML file",
            AT_ONCE,
        );
    }
    assert!(!env.state_dir().exists(), "a refused plan left state");
}

#[test]
fn a_fifo_is_refused_at_once_without_waiting_for_a_writer() {
    let env = Env::new();
    let fifo = env.path().join("plan.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let line = format!(
        "  {}: `(file)`: a plan must be a regular file, and this is a FIFO (named pipe); name the plan's YAML file",
        fifo.display()
    );
    for args in plan_commands(fifo.to_str().unwrap()) {
        assert_refused(&run_bounded(&env, &args), &line, AT_ONCE);
    }
}

#[test]
fn a_directory_is_refused() {
    let env = Env::new();
    let dir = env.path().join("plans");
    std::fs::create_dir(&dir).unwrap();
    let r = run_bounded(&env, &["plan", "validate", dir.to_str().unwrap()]);
    assert_refused(
        &r,
        &format!(
            "  {}: `(file)`: a plan must be a regular file, and this is a directory; name the plan's YAML file",
            dir.display()
        ),
        AT_ONCE,
    );
}

#[test]
fn a_file_over_one_mib_is_refused_before_it_is_read_and_one_at_the_cap_is_read() {
    let env = Env::new();
    let valid = format!("{HEAD}{STEPS}");
    let cap = 1024 * 1024;
    // A valid plan padded with a comment to exactly 1 MiB: read and accepted.
    let at_cap = format!("{valid}#{}\n", "x".repeat(cap - valid.len() - 2));
    assert_eq!(at_cap.len(), cap);
    let plan = env.write_plan("at-cap.yaml", &at_cap);
    let r = run_bounded(&env, &["plan", "validate", plan.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    // One byte more: refused from its size.
    let over = format!("{valid}#{}\n", "x".repeat(cap - valid.len() - 1));
    let plan = env.write_plan("over.yaml", &over);
    for args in plan_commands(plan.to_str().unwrap()) {
        assert_refused(
            &run_bounded(&env, &args),
            &format!(
                "  {}: `(file)`: a plan file is at most 1 MiB (1,048,576 bytes); this one has 1,048,577 bytes",
                plan.display()
            ),
            AT_ONCE,
        );
    }
    // A sparse 8 GiB file: refused as quickly, nothing of it read.
    let huge = env.path().join("huge.yaml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    assert_refused(
        &run_bounded(&env, &["plan", "validate", huge.to_str().unwrap()]),
        &format!(
            "  {}: `(file)`: a plan file is at most 1 MiB (1,048,576 bytes); this one has 8,589,934,592 bytes",
            huge.display()
        ),
        AT_ONCE,
    );
}

#[test]
fn a_key_given_twice_names_both_lines() {
    let text = HEAD.replace(
        "  auth_token:",
        "  transit_encryption_mode: required\n  kms_key_id: alias/other\n  auth_token:",
    );
    let r = refuse_text(
        &format!("{text}{STEPS}"),
        ":10: `target.kms_key_id`: is given twice (lines 8 and 10): a field appears once in its mapping; keep one",
    );
    assert!(!r.stderr.contains("DuplicateKeyPolicy"), "{r:?}");
}

#[test]
fn two_documents_are_one_too_many() {
    let r = refuse_text(
        &format!("{HEAD}{STEPS}---\n{HEAD}{STEPS}"),
        ":14: `(document)`: a plan is one YAML document; this file has 2 (the second starts here, after `---`): keep one",
    );
    assert!(!r.stderr.contains("from_str_multiple"), "{r:?}");
}

#[test]
fn deep_nesting_is_refused_in_the_plan_s_terms() {
    // Valid YAML, 300 levels deep in block style (past the YAML parser's own recursion limit):
    // `tags` opens level 3 at line 10, so level 17 opens at line 24.
    let mut tags = String::from("  tags:\n");
    for level in 0..300 {
        tags.push_str(&format!("{}k{level}:\n", "  ".repeat(level + 2)));
    }
    tags.push_str(&format!("{}leaf: x\n", "  ".repeat(302)));
    let text = HEAD.replace("  auth_token:", &format!("{tags}  auth_token:"));
    let r = refuse_text(
        &format!("{text}{STEPS}"),
        ":9: `target.tags`: nesting deeper than 16 levels (line 24 is deeper): a plan is at most 16 levels deep",
    );
    assert!(!r.stderr.contains("recursion limit"), "{r:?}");
    // Flow style, 10,000 levels on one line: the same rule.
    let text = HEAD.replace(
        "  auth_token:",
        &format!(
            "  tags: {}{}\n  auth_token:",
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
    );
    let r = refuse_text(
        &format!("{text}{STEPS}"),
        ":9: `target.tags`: nesting deeper than 16 levels (line 9 is deeper): a plan is at most 16 levels deep",
    );
    assert!(!r.stderr.contains("recursion limit"), "{r:?}");
}

#[test]
fn ten_thousand_steps_list_twenty_issues_and_count_the_rest() {
    let env = Env::new();
    let steps = format!(
        "  - kind: preflight\n{}  - kind: restore_encrypted\n",
        "  - kind: backup\n".repeat(9_998)
    );
    let plan = env.write_plan("plan.yaml", &format!("{HEAD}{steps}"));
    let path = plan.display().to_string();
    let r = run_bounded(&env, &["plan", "validate", &path]);
    // Two full parses of 10,000 steps take the debug build (dependencies unoptimized) about 0.7 s on
    // an idle machine; the bound leaves room for a loaded one and still catches a blow-up.
    assert_refused(
        &r,
        &format!(
            "  {path}: `(plan)`: … and 9,977 more (only the first 20 are listed; fix these and validate again)"
        ),
        Duration::from_secs(5),
    );
    let issues: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with(&format!("  {path}")))
        .collect();
    assert_eq!(issues.len(), 21, "{r:?}");
    assert_eq!(
        issues[0],
        format!(
            "  {path}:13: `steps[2].kind`: `backup` appears twice (first as steps[1]); each step may be listed once"
        )
    );
    assert_eq!(
        r.stderr.lines().count(),
        23,
        "error, 21 issues, hint: {r:?}"
    );
}

#[test]
fn a_non_ascii_name_says_the_real_rule_and_names_the_character() {
    refuse_text(
        &format!("{}{STEPS}", HEAD.replace("name: orders", "name: ördérs")),
        ":2: `name`: becomes the state's folder name, so it must be 1 to 64 characters, each an ASCII letter, digit, `.`, `_` or `-`, the first an ASCII letter or digit (character 1 is `ö`, U+00F6, which is not ASCII)",
    );
}
