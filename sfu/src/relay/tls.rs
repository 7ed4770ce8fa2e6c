//! Who may join a link: nodes holding a certificate issued by the cluster CA.
//!
//! The operator makes one CA per cluster (`aula cluster ca`) and one certificate per node
//! (`aula cluster cert --node ID`), named after the node id. Both ends of a link present their
//! certificate and accept only one issued by the cluster CA (mutual TLS); the connecting node also
//! checks that the server's certificate names the node it meant to reach, and the accepting node
//! that the client's names the node id its hello claims. Certificates are made by `rcgen` and
//! verified by `rustls` (webpki); nothing here does cryptography by hand.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use time::{Duration, OffsetDateTime};

/// The ALPN protocol of relay links: a node speaking another version of the link is refused
/// during the handshake rather than misreading the stream.
pub const ALPN: &[u8] = b"aula-relay/1";

/// How long a cluster CA is valid: long, as replacing it means reissuing every node's certificate.
const CA_VALIDITY: Duration = Duration::days(10 * 365);
/// How long a node certificate is valid; reissue with `aula cluster cert` before it ends.
const NODE_VALIDITY: Duration = Duration::days(2 * 365);
/// Certificates start being valid a little in the past, for nodes whose clocks run behind.
const CLOCK_SKEW: Duration = Duration::hours(1);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("node id {0:?} cannot name a certificate (letters, digits, '-' and '.')")]
    BadNodeId(String),
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("reading PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A certificate and its private key, in PEM: what `aula cluster` writes and nodes load.
#[derive(Debug, Clone)]
pub struct PemCert {
    pub cert: String,
    pub key: String,
}

/// A new cluster CA (ECDSA P-256).
pub fn generate_ca() -> Result<PemCert, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Aula cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok(PemCert {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for node `node_id`, signed by `ca`, usable both to accept links (server) and
/// to open them (client). The node id is its DNS name, which is what peers verify.
pub fn issue_node_cert(ca: &PemCert, node_id: &str) -> Result<PemCert, TlsError> {
    node_server_name(node_id)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, KeyPair::from_pem(&ca.key)?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![node_id.to_string()])?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, node_id);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + NODE_VALIDITY;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(PemCert {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The name a node's certificate carries and peers verify: its id, as a DNS name.
pub fn node_server_name(node_id: &str) -> Result<ServerName<'static>, TlsError> {
    match ServerName::try_from(node_id.to_string()) {
        Ok(name @ ServerName::DnsName(_)) => Ok(name),
        _ => Err(TlsError::BadNodeId(node_id.to_string())),
    }
}

/// Whether `cert` (already verified as issued by the cluster CA) names node `node_id`.
pub fn cert_names_node(cert: &CertificateDer<'_>, node_id: &str) -> bool {
    let (Ok(parsed), Ok(name)) = (ParsedCertificate::try_from(cert), node_server_name(node_id))
    else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// The rustls configs of one node: its certificate, and trust in the cluster CA alone.
#[derive(Debug, Clone)]
pub struct NodeTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl NodeTls {
    /// Configs for the node holding `node`, in the cluster whose CA certificate is `ca_cert`
    /// (PEM). TLS 1.3 only, as QUIC requires; ring, whatever else the process links.
    pub fn new(ca_cert: &str, node: &PemCert) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(cluster_roots(ca_cert)?);
        let chain = vec![CertificateDer::from_pem_slice(node.cert.as_bytes())?];
        let key = PrivateKeyDer::from_pem_slice(node.key.as_bytes())?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN.to_vec()];

        let mut client =
            client_builder(provider.clone(), roots)?.with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// A root store holding only the cluster CA: public CAs are never trusted between nodes.
fn cluster_roots(ca_cert: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_cert.as_bytes())?)?;
    Ok(roots)
}

/// A TLS 1.3 client config builder that verifies servers against `roots`.
fn client_builder(
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(TlsError::Verifier)?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier))
}

/// A client config trusting the cluster CA but presenting no certificate: what a stranger who
/// got hold of the CA certificate (public, after all) would try.
#[cfg(test)]
pub(crate) fn client_without_certificate(ca_cert: &str) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(cluster_roots(ca_cert).unwrap());
    let mut client = client_builder(provider, roots)
        .unwrap()
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    Arc::new(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_name_their_node_and_chain_to_the_ca() {
        let ca = generate_ca().unwrap();
        let node = issue_node_cert(&ca, "eu-west-1").unwrap();
        let der = CertificateDer::from_pem_slice(node.cert.as_bytes()).unwrap();
        assert!(cert_names_node(&der, "eu-west-1"));
        assert!(!cert_names_node(&der, "eu-west-2"));
        // The configs build: the key matches the certificate, the CA parses.
        NodeTls::new(&ca.cert, &node).unwrap();
    }

    #[test]
    fn a_node_certificate_needs_a_usable_node_id() {
        let ca = generate_ca().unwrap();
        for bad in ["", "10.0.0.1", "a b", "eu/1"] {
            assert!(
                matches!(issue_node_cert(&ca, bad), Err(TlsError::BadNodeId(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_ca_key_that_is_not_pem_is_an_error() {
        let ca = generate_ca().unwrap();
        let broken = PemCert {
            cert: ca.cert.clone(),
            key: "not a key".into(),
        };
        assert!(issue_node_cert(&broken, "eu-1").is_err());
    }
}
