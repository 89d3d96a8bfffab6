//! The lab's certificates: one CA (written to `DIR/ca.pem`, trusted via `--ca-cert`) and one
//! leaf per emulated device with its address as IP SAN, so `--pin-sha256` can tell devices apart.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

pub struct Leaf {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf's DER, hex: what `--pin-sha256` takes.
    pub pin: String,
}

pub fn new_ca() -> Result<Ca, String> {
    let key = KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "tc lab CA");
    let cert = p
        .self_signed(&key)
        .map_err(|e| format!("CA certificate: {e}"))?;
    Ok(Ca { cert, key })
}

impl Ca {
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn leaf(&self, addr: IpAddr, name: &str) -> Result<Leaf, String> {
        let key = KeyPair::generate().map_err(|e| format!("device key: {e}"))?;
        let mut p = CertificateParams::new(vec![addr.to_string()]).map_err(|e| e.to_string())?;
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| format!("device certificate: {e}"))?;
        let der: CertificateDer<'static> = cert.der().clone();
        let pin = crate::util::hex(&crate::util::sha256(der.as_ref()));
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![der], key_der)
        .map_err(|e| format!("TLS server config: {e}"))?;
        Ok(Leaf {
            config: Arc::new(config),
            pin,
        })
    }
}
