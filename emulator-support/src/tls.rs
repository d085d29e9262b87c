//! A throw-away PKI made at start: a CA, the server's certificate for
//! `localhost` and `127.0.0.1`, and client certificates on request.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};

/// Completes a TLS handshake on `tcp` before anything is read, so a client
/// that refuses our certificate never gets a request processed. Returns the
/// stream and whether the client sent a (verified) certificate; `None` when
/// the handshake failed.
pub fn accept(
    config: Arc<ServerConfig>,
    tcp: std::net::TcpStream,
) -> Option<(StreamOwned<ServerConnection, std::net::TcpStream>, bool)> {
    let conn = ServerConnection::new(config).ok()?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).ok()?;
    }
    let cert = tls.conn.peer_certificates().is_some_and(|c| !c.is_empty());
    Some((tls, cert))
}

pub struct Pki {
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        Pki {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(
        &self,
        cn: &str,
        sans: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("generate key");
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert, key)
    }

    /// A client certificate for user `cn`, signed by this CA.
    pub fn client_identity(&self, cn: &str) -> Identity {
        let (cert, key) = self.leaf(cn, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Server TLS: our certificate; client certificates optional but, when
    /// sent, verified against this CA.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config_named("kube-emulator")
    }

    /// [`server_config`](Self::server_config) with the certificate's common
    /// name `cn`.
    pub fn server_config_named(&self, cn: &str) -> Arc<ServerConfig> {
        self.server_config_for(cn, &["127.0.0.1"])
    }

    /// [`server_config_named`](Self::server_config_named) for `localhost`
    /// and the addresses `hosts`.
    pub fn server_config_for(&self, cn: &str, hosts: &[&str]) -> Arc<ServerConfig> {
        let mut names = vec!["localhost".to_string()];
        names.extend(hosts.iter().map(|h| h.to_string()));
        let (cert, key) = self.leaf(cn, names, ExtendedKeyUsagePurpose::ServerAuth);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA into root store");
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .expect("client verifier");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("server certificate");
        Arc::new(config)
    }
}
