//! Liveness from the outside in: the served socket is asked for Probe, as
//! any CSI caller would ask it.

use std::{sync::Arc, time::Duration};

use grpcio::{CallOption, ChannelBuilder, EnvBuilder};

use crate::proto::{csi, csi_grpc::IdentityClient};

use super::Endpoint;

/// A client of this process's own CSI socket. Liveness means the socket
/// answers Probe at all — ready or not: a dependency that is down makes
/// the controller not-ready, never restarted (a restart cannot bring RDS
/// back), while a wedged gRPC server fails this check.
pub struct SelfProbe {
    client: IdentityClient,
}

impl SelfProbe {
    pub fn new(endpoint: &Endpoint) -> SelfProbe {
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix("self-probe")
                .build(),
        );
        let channel = ChannelBuilder::new(env).connect(&endpoint.grpc_address());
        SelfProbe {
            client: IdentityClient::new(channel),
        }
    }

    /// Whether the socket answered Probe within `timeout`; why not when not.
    pub fn answers(&self, timeout: Duration) -> Result<(), String> {
        self.client
            .probe_opt(
                &csi::ProbeRequest::new(),
                CallOption::default().timeout(timeout),
            )
            .map(|_| ())
            .map_err(|e| format!("the CSI socket did not answer Probe: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_nobody_serves_is_not_alive() {
        let dir = std::env::temp_dir().join(format!("rds-self-probe-{}", std::process::id()));
        let endpoint = Endpoint::parse(&format!("unix://{}/none.sock", dir.display())).unwrap();
        let why = SelfProbe::new(&endpoint)
            .answers(Duration::from_millis(300))
            .unwrap_err();
        assert!(why.contains("did not answer Probe"), "{why}");
    }
}
