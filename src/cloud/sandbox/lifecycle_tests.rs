//! Work whose caller died, finished by the next look; no process outliving its group; creations that
//! cannot finish. The callers' deaths are simulated by leaving the registry as a killed caller leaves it
//! (the integration tests kill the real binary instead).

use std::time::{Duration, Instant};

use super::tests::{TestSandbox, no_progress, request, sandbox, wait_available};
use super::*;
use crate::cloud::{CloudRead, CloudWrite};

/// Register snapshot `name` of `group` as `creating`, as a requester killed right after its request
/// leaves it (no one holds the snapshot's work lock).
fn orphan_snapshot_request(sb: &TestSandbox, group: &str, name: &str, key: Option<&str>) {
    registry::update(sb.dir(), |reg| {
        let rec = snapshots::new_snapshot_rec(reg, group, name, key)?;
        reg.snapshots.insert(name.into(), rec);
        Ok(())
    })
    .unwrap();
}

fn set_group_status(sb: &TestSandbox, id: &str, status: &str) {
    registry::update(sb.dir(), |reg| {
        reg.groups.get_mut(id).unwrap().status = status.into();
        Ok(())
    })
    .unwrap();
}

/// A redis-server this test started itself, killed on drop should the test fail before the sandbox
/// stops it (`stop_pids` may already have reaped it: then it is not alive and is left alone).
struct Stray(std::process::Child);

impl Drop for Stray {
    fn drop(&mut self) {
        if process::pid_alive(self.0.id() as i32) {
            let _ = self.0.kill();
        }
        let _ = self.0.try_wait();
    }
}

/// Wait (bounded) until `pid` has exited.
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while process::pid_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sandbox_a_snapshot_whose_requester_died_is_taken_by_the_next_look() {
    let sb = sandbox();
    sb.up("src", 0, 100, &no_progress).await.unwrap();
    sb.kms_create("k").unwrap();
    orphan_snapshot_request(&sb, "src", "snap", Some("alias/k"));

    // While its requester holds the work lock, a look leaves it alone.
    let held = sb.work_lock("snapshots/snap.lock", false).unwrap().unwrap();
    let snap = sb.describe_snapshot("snap").await.unwrap().unwrap();
    assert_eq!(snap.status, "creating");
    drop(held);

    let snap = sb.describe_snapshot("snap").await.unwrap().unwrap();
    assert_eq!(snap.status, "available");
    assert!(snap.kms_key_id.is_some());
    assert!(sb.dir().join("snapshots/snap.sealed").exists());
    // It restores.
    let token = crate::secret::generate_token();
    let mut req = request("enc", "snap", Some("alias/k"), &token);
    req.replicas_per_node_group = 0;
    sb.create_group_from_snapshot(&req).await.unwrap();
    wait_available(&sb, "enc").await;

    // A request that cannot be done any more (its group has no running node) ends `failed`, with why.
    sb.stop_all_blocking();
    orphan_snapshot_request(&sb, "src", "late", None);
    let status = sb.status().await.unwrap();
    let late = status.snapshots.iter().find(|s| s.name == "late").unwrap();
    assert_eq!(late.status, "failed");
    assert!(
        late.failure.as_deref().unwrap().contains("no running node"),
        "{late:?}"
    );
}

#[tokio::test]
async fn sandbox_a_delete_whose_caller_died_is_finished_by_the_next_look() {
    let sb = sandbox();
    sb.up("src", 1, 10, &no_progress).await.unwrap();
    let group_dir = sb.group_dir("src");
    let pids = process::pids_under(&group_dir);
    assert_eq!(pids.len(), 2);
    set_group_status(&sb, "src", "deleting");

    let held = sb.group_lock("src", false).unwrap().unwrap();
    let g = sb.describe_group("src").await.unwrap().unwrap();
    assert_eq!(g.status, "deleting", "its deleter still works on it");
    drop(held);

    assert!(sb.describe_group("src").await.unwrap().is_none());
    pids.iter().for_each(|p| wait_gone(*p));
    assert!(!group_dir.exists());
    assert!(registry::load(sb.dir()).unwrap().groups.is_empty());
}

#[tokio::test]
async fn sandbox_a_node_its_starter_never_recorded_is_stopped_before_the_restart() {
    let sb = sandbox();
    sb.up("src", 0, 10, &no_progress).await.unwrap();
    let [old] = process::pids_under(&sb.group_dir("src"))[..] else {
        panic!("one process expected");
    };
    // A caller killed between starting the node and recording it.
    registry::update(sb.dir(), |reg| {
        let g = reg.groups.get_mut("src").unwrap();
        g.status = "creating".into();
        g.nodes.clear();
        Ok(())
    })
    .unwrap();

    wait_available(&sb, "src").await;
    wait_gone(old);
    let now = process::pids_under(&sb.group_dir("src"));
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], old);
}

#[tokio::test]
async fn sandbox_delete_stops_a_redis_server_no_record_names() {
    let sb = sandbox();
    sb.up("src", 0, 10, &no_progress).await.unwrap();
    let node_dir = sb.group_dir("src").join("0");
    // An orphan of a retried start: it stands in the node's folder, but no pidfile or record names it.
    let stray_port = free_port();
    let mut stray = Stray(
        std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
            ])
            .arg(stray_port.to_string())
            .arg("--dir")
            .arg(&node_dir)
            .current_dir(&node_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", stray_port)).is_err() {
        assert!(Instant::now() < deadline, "the stray never listened");
        assert!(stray.0.try_wait().unwrap().is_none(), "the stray exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(process::pids_under(&node_dir).len(), 2);

    sb.delete_group("src").await.unwrap();
    wait_gone(stray.0.id() as i32);
    // `stop_pids` may have reaped it already (it is this test's child).
    let _ = stray.0.try_wait();
    assert_eq!(process::pids_under(sb.dir()), Vec::<i32>::new());
}

#[tokio::test]
async fn sandbox_a_creation_whose_node_cannot_come_up_is_create_failed() {
    let mut sb = sandbox();
    sb.sb = sb.sb.clone().with_create_delay(Duration::from_millis(1500));
    sb.up("src", 0, 50, &no_progress).await.unwrap();
    sb.kms_create("k").unwrap();
    sb.create_snapshot("src", "snap", Some("alias/k"))
        .await
        .unwrap();
    let token = crate::secret::generate_token();
    let mut req = request("enc", "snap", Some("alias/k"), &token);
    req.replicas_per_node_group = 0;
    sb.create_group_from_snapshot(&req).await.unwrap();
    assert_eq!(
        sb.describe_group("enc").await.unwrap().unwrap().status,
        "creating"
    );

    // Its node dies, and the snapshot it must restart from now holds no RDB: redis-server refuses it.
    let reg = registry::load(sb.dir()).unwrap();
    let key = reg.kms_keys.values().next().unwrap();
    let garbage = kms::seal(key, b"not an rdb file".to_vec()).unwrap();
    std::fs::write(sb.dir().join("snapshots/snap.sealed"), garbage).unwrap();
    let enc_dir = sb.group_dir("enc");
    let pids = process::pids_under(&enc_dir);
    process::stop_pids(&pids, Duration::from_secs(1));

    let g = sb.describe_group("enc").await.unwrap().unwrap();
    assert_eq!(g.status, "create-failed");
    assert_eq!(process::pids_under(&enc_dir), Vec::<i32>::new());
    let status = sb.status().await.unwrap();
    let enc = status
        .groups
        .iter()
        .find(|g| g.replication_group_id == "enc")
        .unwrap();
    assert!(
        enc.failure.as_deref().unwrap().contains("enc-001"),
        "{enc:?}"
    );

    // A create-failed group can be deleted and its id used again.
    sb.delete_group("enc").await.unwrap();
    assert!(sb.describe_group("enc").await.unwrap().is_none());
}

/// A port that was free a moment ago (the stray must listen somewhere, or redis-server exits at once).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    l.local_addr().unwrap().port()
}
