//! Client certificates: a TLS `redis-server` with `tls-auth-clients yes` refuses `copy` and `verify`
//! without `--cert`/`--key` and accepts them with, and a plan's `tls_client_cert`/`tls_client_key` come
//! together or not at all.

use ecmigrate::data::connect::connect;

use super::cluster_copy::{PASSWORD, Servers, free_ports, make_certs, start_node, start_node_with};
use super::harness::{Env, block_on, wait_for};

#[test]
fn copy_and_verify_present_a_client_certificate_to_a_server_that_requires_one() {
    let env = Env::new();
    let dir = env.path().join("servers");
    let certs = make_certs(&dir.join("certs"));
    let ports = free_ports(2);
    let (plain, source) = start_node(&dir, ports[0], 0, None, false);
    let (tls, target) = start_node_with(&dir, ports[1], 0, Some(&certs), false, true);
    let _servers = Servers(vec![plain, tls]);
    for node in [&source, &target] {
        wait_for(
            "the node to answer PING",
            std::time::Duration::from_secs(20),
            || block_on(connect(node)).is_ok(),
        );
    }
    block_on(async {
        let mut conn = connect(&source).await.unwrap();
        for i in 0..200 {
            let _: () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(i)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    });
    // A connection without a certificate is refused by the server itself, not by ecmigrate.
    let bare = ecmigrate::data::connect::RedisEndpoint {
        client_cert: None,
        ..target.clone()
    };
    assert!(
        block_on(connect(&bare)).is_err(),
        "the server must refuse a client without a certificate"
    );

    let src = format!("redis://127.0.0.1:{}", source.port);
    let dst = format!("rediss://127.0.0.1:{}", target.port);
    let mut env = env;
    env.set_env("DST_PW", PASSWORD);
    let ca = certs.ca.to_str().unwrap();
    let base = ["--ca-file", ca, "--dst-password-env", "DST_PW"];
    let with_cert = [
        "--cert",
        certs.cert.to_str().unwrap(),
        "--key",
        certs.key.to_str().unwrap(),
    ];

    let refused = env.run(&[&["copy", &src, &dst][..], &base].concat());
    assert_ne!(
        refused.code, 0,
        "copy without a certificate must fail: {refused:?}"
    );
    let copied = env.run(&[&["copy", &src, &dst][..], &base, &with_cert].concat());
    assert_eq!(copied.code, 0, "{copied:?}");
    let verified = env.run(&[&["verify", &src, &dst, "--full"][..], &base, &with_cert].concat());
    assert_eq!(verified.code, 0, "{verified:?}");
    let unverified = env.run(&[&["verify", &src, &dst, "--full"][..], &base].concat());
    assert_ne!(
        unverified.code, 0,
        "verify without a certificate must fail: {unverified:?}"
    );
    assert!(
        !unverified.all_output().contains(PASSWORD),
        "{unverified:?}"
    );

    // Half a certificate is refused by the command line; a missing file names its flag.
    let half = env.run(&["copy", &src, &dst, "--cert", certs.cert.to_str().unwrap()]);
    assert_eq!(half.code, 2, "{half:?}");
    let missing = env.run(
        &[
            &["copy", &src, &dst][..],
            &base,
            &[
                "--cert",
                "/nonexistent.pem",
                "--key",
                certs.key.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("--cert /nonexistent.pem does not exist"),
        "{missing:?}"
    );
}
