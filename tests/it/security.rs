//! Security promises through the real binary: no token in any log line at
//! trace level, TLS verified against the configured CA, and verification
//! skipped only when the kubeconfig says so.

use std::time::Duration;

use crate::support::*;

const TOKEN: &str = "test-token-4f1d9c";

fn kubeconfig(
    dir: &std::path::Path,
    server: &str,
    cluster_extra: &str,
    user: &str,
) -> std::path::PathBuf {
    let path = dir.join("kc-custom");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: {server}\n{cluster_extra}contexts:\n- name: c\n  context: {{cluster: k, user: u}}\nusers:\n- name: u\n  user:\n{user}"
        ),
    )
    .unwrap();
    path
}

#[test]
fn no_log_line_carries_a_token_even_at_trace_level() {
    let dir = TempDir::new("sec-log");
    let (emu, _) = emulator(dir.path());
    emu.create("persistentvolumes", pv("vol-1", "vol-1", DRIVER))
        .unwrap();
    emu.create("nodes", node("node-1")).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::write(dir.path().join("ca.crt"), emu.ca_pem().unwrap()).unwrap();
    let kc = kubeconfig(
        dir.path(),
        &emu.url(),
        "    certificate-authority: ca.crt\n",
        "    tokenFile: token\n",
    );

    let c = Controller::start(dir.path(), Some(&kc), &["--log-level", "trace"]);
    let k = c.csi();
    k.publish("vol-1", "node-1").unwrap();
    // Rotation: the old token is refused, the file holds the new one.
    let rotated = "rotated-token-8d2e77";
    std::fs::write(&token_file, rotated).unwrap();
    emu.set_token(Some(rotated.into()));
    k.unpublish("vol-1", "node-1").unwrap();
    k.publish("vol-1", "node-1").unwrap();

    let logs = c.logs();
    assert!(logs.contains("TRACE"), "trace logging is on:\n{logs}");
    assert!(logs.contains("re-reading the token file"), "{logs}");
    for secret in [TOKEN, rotated] {
        assert!(
            !logs.contains(secret),
            "token {secret} in the logs:\n{logs}"
        );
    }
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_and_nothing_is_served() {
    let dir = TempDir::new("sec-ca");
    let (emu, _) = emulator(dir.path());
    let other = kube_emulator::Emulator::start(kube_emulator::Options {
        port: 0,
        tls: true,
        token: None,
        ..Default::default()
    })
    .unwrap();
    std::fs::write(dir.path().join("other-ca.crt"), other.ca_pem().unwrap()).unwrap();
    let kc = kubeconfig(
        dir.path(),
        &emu.url(),
        "    certificate-authority: other-ca.crt\n",
        &format!("    token: {TOKEN}\n"),
    );
    let mut c = Controller::spawn(dir.path(), Some(&kc), &["--startup-timeout", "1s"]);
    let status = c.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    assert!(!c.socket.exists());
    assert!(
        emu.requests().is_empty(),
        "no request may be processed: {:?}",
        emu.requests()
    );
    assert!(!c.logs().contains(TOKEN));
}

#[test]
fn tls_verification_is_skipped_only_when_the_kubeconfig_says_so() {
    let dir = TempDir::new("sec-insecure");
    let (emu, _) = emulator(dir.path());
    // No CA given: the public roots, which do not know the emulator's CA.
    let kc = kubeconfig(dir.path(), &emu.url(), "", &format!("    token: {TOKEN}\n"));
    let mut c = Controller::spawn(dir.path(), Some(&kc), &["--startup-timeout", "1s"]);
    assert!(!c.wait_exit(Duration::from_secs(20)).success());

    let kc = kubeconfig(
        dir.path(),
        &emu.url(),
        "    insecure-skip-tls-verify: true\n",
        &format!("    token: {TOKEN}\n"),
    );
    let c = Controller::start(dir.path(), Some(&kc), &[]);
    assert!(
        c.logs().contains("TLS verification of"),
        "the operator is warned:\n{}",
        c.logs()
    );
}
