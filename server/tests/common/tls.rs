//! TLS for the end-to-end tests: a certificate authority made at run time
//! (rcgen), server certificates it signs written as the PEM files the
//! server loads, and clients that trust it.
//!
//! `TestServer::start_tls` serves TLS with a certificate for `localhost`
//! and 127.0.0.1; its `connect` and `get` then go over TLS, so a test
//! written against `TestServer` runs the same over either transport.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::WAIT;

/// The name every test certificate is issued for (and 127.0.0.1).
pub const SERVER_NAME: &str = "localhost";

/// A certificate authority that lives for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A server certificate and its key, as DER (to compare with what a client
/// is shown) and as the PEM the server reads.
#[derive(Clone)]
pub struct ServerCert {
    /// The server's own certificate.
    pub der: CertificateDer<'static>,
    /// The chain as PEM: the server's certificate, then the CA's.
    pub chain_pem: String,
    /// The private key as PEM (PKCS#8).
    pub key_pem: String,
}

impl ServerCert {
    /// Writes the chain and the key where the server reads them.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.chain_pem).unwrap();
        std::fs::write(key, &self.key_pem).unwrap();
    }
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "gitmind test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A new server certificate for `localhost` and 127.0.0.1, with its own
    /// key; `label` (its common name) tells certificates apart in failures.
    pub fn issue(&self, label: &str) -> ServerCert {
        let mut params =
            CertificateParams::new(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, label);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        ServerCert {
            der: cert.der().clone(),
            chain_pem: cert.pem() + &self.cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A connector that trusts this CA only, offering ALPN `http/1.1` as
    /// browsers do for WebSockets.
    pub fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        #[allow(deprecated)] // the server's provider; see server/src/tls.rs
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

/// What `TestServer::start_tls` serves: the CA, the files the server reads
/// (a test may rewrite them and reload) and a client connector.
pub struct TestTls {
    pub ca: TestCa,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The certificate written when the server started.
    pub cert: ServerCert,
    pub connector: TlsConnector,
}

impl TestTls {
    /// A CA and a first certificate, written into `dir`.
    pub fn new(dir: &Path) -> Self {
        let ca = TestCa::new();
        let cert = ca.issue("first");
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        cert.write(&cert_path, &key_path);
        let connector = ca.connector();
        TestTls {
            ca,
            cert_path,
            key_path,
            cert,
            connector,
        }
    }

    /// A TLS connection to `addr` checked against the CA (panics after
    /// [`WAIT`] or on a handshake failure).
    pub async fn connect(&self, addr: SocketAddr) -> TlsStream<TcpStream> {
        self.try_connect(addr)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake failed: {e}"))
    }

    /// A TLS connection to `addr`, or why the handshake failed.
    pub async fn try_connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        self.handshake(TcpStream::connect(addr).await?).await
    }

    /// The client's TLS handshake on a TCP connection already open.
    pub async fn handshake(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        tokio::time::timeout(WAIT, self.connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)?
    }

    /// The certificate a new connection to `addr` is shown.
    pub async fn served_certificate(&self, addr: SocketAddr) -> CertificateDer<'static> {
        let stream = self.connect(addr).await;
        stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    }
}
