//! The server spine through the real binary: identity, capabilities,
//! unimplemented calls, flags, socket life cycle, signals.

use std::{os::unix::fs::PermissionsExt, time::Duration};

use crate::support::*;
use grpcio::RpcStatusCode;
use rds_csi_controller::proto::csi;

#[test]
fn identity_and_capabilities_over_the_unix_socket() {
    let dir = TempDir::new("spine-id");
    let c = Controller::start(dir.path(), None, &[]);
    let csi_client = c.csi();
    let info = csi_client
        .identity
        .get_plugin_info_opt(&csi::GetPluginInfoRequest::new(), csi_client.opt())
        .unwrap();
    assert_eq!(info.get_name(), "rds.csi.srvlab.io");
    assert_eq!(info.get_vendor_version(), env!("CARGO_PKG_VERSION"));

    let caps = csi_client
        .identity
        .get_plugin_capabilities_opt(&csi::GetPluginCapabilitiesRequest::new(), csi_client.opt())
        .unwrap();
    let services: Vec<_> = caps
        .get_capabilities()
        .iter()
        .map(|c| c.get_service().get_field_type())
        .collect();
    assert_eq!(
        services,
        vec![csi::PluginCapability_Service_Type::CONTROLLER_SERVICE]
    );

    let probe = csi_client
        .identity
        .probe_opt(&csi::ProbeRequest::new(), csi_client.opt())
        .unwrap();
    assert!(probe.has_ready() && probe.get_ready().get_value());

    let ccaps = csi_client
        .controller
        .controller_get_capabilities_opt(
            &csi::ControllerGetCapabilitiesRequest::new(),
            csi_client.opt(),
        )
        .unwrap();
    let rpcs: Vec<_> = ccaps
        .get_capabilities()
        .iter()
        .map(|c| c.get_rpc().get_field_type())
        .collect();
    assert_eq!(
        rpcs,
        vec![csi::ControllerServiceCapability_RPC_Type::PUBLISH_UNPUBLISH_VOLUME]
    );
}

#[test]
fn unimplemented_controller_calls_answer_unimplemented() {
    let dir = TempDir::new("spine-unimpl");
    let c = Controller::start(dir.path(), None, &[]);
    let k = c.csi();
    let mut req = csi::CreateVolumeRequest::new();
    req.set_name("pvc-1".into());
    let e = k
        .controller
        .create_volume_opt(&req, k.opt())
        .map_err(code_of)
        .unwrap_err();
    assert_eq!(e.0, RpcStatusCode::UNIMPLEMENTED);
    let e = k
        .controller
        .list_volumes_opt(&csi::ListVolumesRequest::new(), k.opt())
        .map_err(code_of)
        .unwrap_err();
    assert_eq!(e.0, RpcStatusCode::UNIMPLEMENTED);
    let e = k
        .controller
        .delete_snapshot_opt(&csi::DeleteSnapshotRequest::new(), k.opt())
        .map_err(code_of)
        .unwrap_err();
    assert_eq!(e.0, RpcStatusCode::UNIMPLEMENTED);
    // Still serving afterwards.
    assert!(k
        .identity
        .probe_opt(&csi::ProbeRequest::new(), k.opt())
        .is_ok());
}

#[test]
fn standalone_mode_refuses_publish_with_a_clear_message() {
    let dir = TempDir::new("spine-standalone");
    let c = Controller::start(dir.path(), None, &[]);
    let (code, msg) = c.csi().publish("vol-1", "node-1").unwrap_err();
    assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION);
    assert!(msg.contains("standalone"), "{msg}");
    assert!(
        c.logs().contains("standalone mode"),
        "startup must warn:\n{}",
        c.logs()
    );
}

#[test]
fn socket_file_is_mode_0660() {
    let dir = TempDir::new("spine-mode");
    let c = Controller::start(dir.path(), None, &[]);
    let mode = std::fs::metadata(&c.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
}

#[test]
fn sigterm_exits_zero_and_removes_the_socket() {
    let dir = TempDir::new("spine-term");
    let mut c = Controller::start(dir.path(), None, &[]);
    c.signal("TERM");
    let status = c.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit {status}:\n{}", c.logs());
    assert!(!c.socket.exists());
    let logs = c.logs();
    assert!(
        logs.contains("server stopped") && !logs.contains("still"),
        "clean shutdown expected:\n{logs}"
    );
}

#[test]
fn socket_left_by_kill_9_does_not_stop_the_next_start() {
    let dir = TempDir::new("spine-stale");
    let mut first = Controller::start(dir.path(), None, &[]);
    first.kill9();
    assert!(
        first.socket.exists(),
        "kill -9 leaves the socket file behind"
    );
    let second = Controller::start(dir.path(), None, &[]);
    assert!(
        second.logs().contains("removing stale socket"),
        "{}",
        second.logs()
    );
    assert!(second
        .csi()
        .identity
        .probe_opt(&csi::ProbeRequest::new(), second.csi().opt())
        .is_ok());
}

#[test]
fn second_instance_on_a_live_socket_exits_non_zero() {
    let dir = TempDir::new("spine-live");
    let first = Controller::start(dir.path(), None, &[]);
    let mut second = Controller::spawn(dir.path(), None, &[]);
    let status = second.wait_exit(Duration::from_secs(15));
    assert!(!status.success());
    assert!(
        second
            .logs()
            .contains("another server is already listening"),
        "{}",
        second.logs()
    );
    // The first one is untouched.
    assert!(first
        .csi()
        .identity
        .probe_opt(&csi::ProbeRequest::new(), first.csi().opt())
        .is_ok());
}

#[test]
fn invalid_flags_exit_2_with_usage() {
    for args in [
        &["--bogus"][..],
        &["--workers", "zero"],
        &["--queue-depth"],
        &["--driver-name", "-starts-with-dash"],
        &["--driver-name", "has_underscore.example"],
        &["--driver-name", &"a".repeat(64)],
        &["--endpoint", "tcp://nowhere"],
        &["--endpoint", "tcp://0.0.0.0:9000"],
    ] {
        let out = command(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Usage: rds-csi-controller"), "{args:?}: {err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}

#[test]
fn version_and_help_exit_zero() {
    let out = command(&["--version"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("rds-csi-controller {}", env!("CARGO_PKG_VERSION"))
    );
    let out = command(&["--help"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--queue-depth"));
}

#[test]
fn serves_on_loopback_tcp_for_debugging() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = command(&["--endpoint", &format!("tcp://127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let env = std::sync::Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
    let ch = grpcio::ChannelBuilder::new(env).connect(&format!("127.0.0.1:{port}"));
    let identity = rds_csi_controller::proto::csi_grpc::IdentityClient::new(ch);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let opt = grpcio::CallOption::default().timeout(Duration::from_secs(2));
        match identity.probe_opt(&csi::ProbeRequest::new(), opt) {
            Ok(r) => break r.get_ready().get_value(),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("{e}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready);
}
