//! TLS trust for the REST clients (devices, OVOC): verified against the system's or a given CA
//! by default, pinned to a certificate's SHA-256, or (explicitly) not verified at all.
//!
//! ureq's own rustls connector only knows "verify" or "don't", so `tc` plugs its own connector
//! into ureq's transport chain to get pinning without giving up signature checks.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

use crate::util::{hex, sha256};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trust {
    /// The system's CA bundle.
    System,
    /// The CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 (of its DER).
    Pin([u8; 32]),
    /// No verification (`--insecure`).
    Insecure,
}

impl Trust {
    pub fn from_args(
        ca: Option<&Path>,
        pin: Option<&str>,
        insecure: bool,
    ) -> Result<Trust, String> {
        // A pin is always enforced: --insecure only means "no chain verification" where there is
        // nothing better to check.
        if let Some(p) = pin {
            return parse_pin(p).map(Trust::Pin);
        }
        if insecure {
            return Ok(Trust::Insecure);
        }
        Ok(ca.map_or(Trust::System, |c| Trust::CaFile(c.to_path_buf())))
    }
}

pub fn parse_pin(p: &str) -> Result<[u8; 32], String> {
    crate::util::parse_hex(p)
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| format!("invalid --pin-sha256 {p:?}: expected 64 hex digits (SHA-256 of the DER certificate)"))
}

const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("reading CA certificates {}: {e}", path.display()))?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
        store
            .add(cert)
            .map_err(|e| format!("{}: bad CA certificate: {e}", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!("{}: no certificates found", path.display()));
    }
    Ok(store)
}

pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let cfg = match trust {
        Trust::System => {
            let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
            let path = from_env
                .or_else(|| {
                    SYSTEM_BUNDLES
                        .iter()
                        .map(PathBuf::from)
                        .find(|p| p.exists())
                })
                .ok_or("no system CA bundle found: use --ca-cert FILE or --pin-sha256 HEX")?;
            builder
                .with_root_certificates(load_roots(&path)?)
                .with_no_client_auth()
        }
        Trust::CaFile(p) => builder
            .with_root_certificates(load_roots(p)?)
            .with_no_client_auth(),
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: *pin,
                provider: provider(),
            }))
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified {
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// A ureq agent with this trust and per-request timeout, no redirects, statuses as values,
/// keeping up to `idle_per_host` idle connections to one server for reuse.
pub fn agent(
    trust: &Trust,
    timeout: std::time::Duration,
    idle_per_host: usize,
) -> Result<ureq::Agent, String> {
    let cfg = client_config(trust)?;
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent(concat!("tc/", env!("CARGO_PKG_VERSION")))
        // ureq's 128 KiB buffers each way are sized for bulk transfers; device and OVOC answers
        // are a few KiB, and a session holds hundreds of connections at once in an alarm storm.
        .input_buffer_size(32 << 10)
        .output_buffer_size(16 << 10)
        .max_idle_connections_per_host(idle_per_host)
        .max_idle_connections(idle_per_host.max(10))
        .build();
    let connector =
        ().chain(ureq::unversioned::transport::TcpConnector::default())
            .chain(TlsConnector { config: cfg });
    Ok(ureq::Agent::with_parts(
        config,
        connector,
        ureq::unversioned::resolver::DefaultResolver::default(),
    ))
}

#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = sha256(end_entity.as_ref());
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate pin mismatch: server presented sha256 {}, expected {}",
                hex(&got),
                hex(&self.pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct Unverified {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Wraps ureq's TCP transport in rustls with `tc`'s own `ClientConfig`.
struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConnector")
    }
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .authority()
            .map(|a| a.host())
            .unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::Tls("invalid server name"))?;
        let mut conn = ClientConnection::new(Arc::clone(&self.config), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        })))
    }
}

pub struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let n = self.stream.read(input)?;
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_from_args() {
        assert_eq!(Trust::from_args(None, None, false).unwrap(), Trust::System);
        assert_eq!(Trust::from_args(None, None, true).unwrap(), Trust::Insecure);
        let pin = "ab".repeat(32);
        assert_eq!(
            Trust::from_args(None, Some(&pin), false).unwrap(),
            Trust::Pin([0xab; 32])
        );
        let e = Trust::from_args(None, Some("abcd"), false).unwrap_err();
        assert!(e.contains("invalid --pin-sha256 \"abcd\""), "{e}");
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not pem").unwrap();
        let e = client_config(&Trust::CaFile(p.clone())).unwrap_err();
        assert!(e.contains(&p.display().to_string()), "{e}");
        let e = client_config(&Trust::CaFile(dir.path().join("missing.pem"))).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
