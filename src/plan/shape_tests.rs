//! What is refused before serde sees a plan: files that are not regular or too big, keys given twice,
//! more than one document, nesting too deep; and the cap on the issues listed.

use std::io::Write;
use std::path::Path;

use super::positions::{MAX_DEPTH, Positions};
use super::*;

const GOOD: &str = "version: 1
name: orders
source:
  replication_group_id: orders
target:
  replication_group_id: orders-enc
  auth_token: { env: TOKEN }
steps:
  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
";

fn issues_in(text: &str) -> Vec<PlanIssue> {
    match parse_str(text, "plan.yaml") {
        Ok(_) => panic!("should be refused:\n{text}"),
        Err(Error::InvalidPlan { issues }) => issues,
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn file_issue(path: &Path) -> PlanIssue {
    match load(path) {
        Err(Error::InvalidPlan { mut issues }) if issues.len() == 1 => issues.remove(0),
        other => panic!("{}: {other:?}", path.display()),
    }
}

#[test]
fn the_good_plan_parses() {
    parse_str(GOOD, "plan.yaml").expect("valid");
}

#[test]
fn a_directory_a_device_and_a_fifo_are_refused_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let issue = file_issue(dir.path());
    assert_eq!(issue.field, "(file)");
    assert_eq!(
        issue.rule,
        "a plan must be a regular file, and this is a directory; name the plan's YAML file"
    );
    assert!(
        file_issue(Path::new("/dev/zero"))
            .rule
            .contains("a character device")
    );
    let fifo = dir.path().join("plan.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(file_issue(&fifo).rule.contains("a FIFO (named pipe)"));
}

#[test]
fn a_file_over_the_cap_is_refused_and_one_at_the_cap_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; MAX_PLAN_BYTES as usize + 1]).unwrap();
    assert_eq!(
        file_issue(&big).rule,
        "a plan file is at most 1 MiB (1,048,576 bytes); this one has 1,048,577 bytes"
    );
    // Exactly at the cap: read, then refused for what it holds (only a comment), not for its size.
    let mut f = std::fs::File::create(&big).unwrap();
    f.write_all(GOOD.as_bytes()).unwrap();
    let pad = MAX_PLAN_BYTES as usize - GOOD.len();
    f.write_all(&[b'\n'][..]).unwrap();
    f.write_all(&vec![b'#'; pad - 1]).unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(&big).unwrap().len(), MAX_PLAN_BYTES);
    load(&big).expect("a plan of exactly the cap is read");
}

#[test]
fn a_file_that_is_not_utf8_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("latin1.yaml");
    std::fs::write(&p, b"version: 1\nname: caf\xe9\n").unwrap();
    let issue = file_issue(&p);
    assert_eq!(issue.line, Some(2));
    assert!(
        issue.rule.starts_with("a plan must be UTF-8 text"),
        "{issue}"
    );
}

#[test]
fn a_key_given_twice_names_both_lines() {
    let text = GOOD.replace(
        "  auth_token: { env: TOKEN }\n",
        "  kms_key_id: alias/a\n  auth_token: { env: TOKEN }\n  kms_key_id: alias/b\n",
    );
    let issues = issues_in(&text);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(
        issues[0].to_string(),
        "plan.yaml:9: `target.kms_key_id`: is given twice (lines 7 and 9): a field appears once in its mapping; keep one"
    );
    // Inside a step, three times: every repeat is named, the last with all lines.
    let text = GOOD.replace(
        "  - kind: backup\n",
        "  - kind: backup\n    timeout_seconds: 60\n    timeout_seconds: 70\n    timeout_seconds: 80\n",
    );
    let issues = issues_in(&text);
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert_eq!(issues[1].field, "steps[1].timeout_seconds");
    assert!(
        issues[1]
            .rule
            .starts_with("is given 3 times (lines 11, 12 and 13)"),
        "{}",
        issues[1]
    );
}

#[test]
fn more_than_one_document_is_counted() {
    let issues = issues_in(&format!("{GOOD}---\n{GOOD}---\nversion: 1\n"));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].field, "(document)");
    assert_eq!(issues[0].line, Some(12));
    assert!(
        issues[0]
            .rule
            .starts_with("a plan is one YAML document; this file has 3"),
        "{}",
        issues[0]
    );
    // A leading `---` is one document, not two.
    parse_str(&format!("---\n{GOOD}"), "plan.yaml").expect("one document");
}

#[test]
fn nesting_is_bounded_at_max_depth() {
    // The root mapping is level 1, `target` 2, the flow lists of `tags` the rest.
    let nested = |levels: usize| {
        let inner = levels - 2;
        GOOD.replace(
            "  auth_token:",
            &format!(
                "  tags: {}{}\n  auth_token:",
                "[".repeat(inner),
                "]".repeat(inner)
            ),
        )
    };
    assert!(Positions::of(&nested(MAX_DEPTH)).structure().is_empty());
    let issues = issues_in(&nested(MAX_DEPTH + 1));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].field, "target.tags");
    assert_eq!(
        issues[0].rule,
        "nesting deeper than 16 levels (line 7 is deeper): a plan is at most 16 levels deep"
    );
    // Far past the parser's own bound: the same rule, not the parser's words.
    let issues = issues_in(&nested(1000));
    assert!(
        issues[0].rule.starts_with("nesting deeper than 16 levels"),
        "{issues:?}"
    );
}

#[test]
fn the_issue_list_is_capped() {
    let text = format!("{GOOD}{}", "  - kind: backup\n".repeat(100));
    let issues = issues_in(&text);
    assert_eq!(issues.len(), MAX_LISTED_ISSUES + 1);
    let last = issues.last().unwrap();
    assert_eq!(last.field, "(plan)");
    assert_eq!(
        last.rule,
        "… and 80 more (only the first 20 are listed; fix these and validate again)"
    );
}

#[test]
fn a_non_ascii_name_is_refused_naming_the_character() {
    let issues = issues_in(&GOOD.replace("name: orders", "name: ördérs"));
    assert_eq!(issues[0].field, "name");
    assert_eq!(
        issues[0].rule,
        "becomes the state's folder name, so it must be 1 to 64 characters, each an ASCII letter, digit, `.`, `_` or `-`, the first an ASCII letter or digit (character 1 is `ö`, U+00F6, which is not ASCII)"
    );
    let rule = rules::check_plan_name("orders/x").unwrap_err();
    assert!(
        rule.ends_with("(character 7 is `/`, a path separator)"),
        "{rule}"
    );
    let rule = rules::check_plan_name(".hidden").unwrap_err();
    assert!(rule.ends_with("(it starts with `.`)"), "{rule}");
}
