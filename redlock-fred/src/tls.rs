//! TLS settings, and their translation to fred's rustls connector.
//!
//! Certificates are verified by default. Without the crate feature `tls`, any TLS setting is
//! refused when the backend is built: fred would otherwise connect in plaintext with only a log
//! warning.

use std::fmt;
#[cfg(feature = "tls")]
use std::sync::Arc;

use redlock_core::Error;

use crate::config::config_error;

/// TLS towards a Redis server (and, for [`Sentinel`](crate::Sentinel), towards the sentinels too).
///
/// # Default
/// Verifies the server certificate against the system's root certificates and the host name or
/// IP address connected to.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Tls {
    ca_pem: Option<Vec<u8>>,
    accept_invalid_certs: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("verify_certificates", &!self.accept_invalid_certs)
            .finish()
    }
}

impl Tls {
    /// Verified TLS against the system roots.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates in `pem` (one or more PEM blocks) instead of the system roots.
    #[must_use]
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Trusts the CA certificates in the PEM file at `path` instead of the system roots.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the file cannot be read.
    pub fn with_ca_file(self, path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| config_error(format!("cannot read CA file {}: {e}", path.display())))?;
        Ok(self.with_ca_pem(pem))
    }

    /// Turns certificate verification off (aioredlock's `ssl_cert_reqs=CERT_NONE`). The traffic is
    /// encrypted but anyone on the path can impersonate the server; use only for testing.
    #[must_use]
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.accept_invalid_certs = true;
        self
    }

    /// Whether the server's certificate is checked.
    #[must_use]
    pub fn verifies_certificates(&self) -> bool {
        !self.accept_invalid_certs
    }

    #[cfg(feature = "tls")]
    pub(crate) fn to_fred(&self) -> Result<fred::types::config::TlsConfig, Error> {
        use fred::rustls::{self, ClientConfig, RootCertStore};

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(format!("TLS setup failed: {e}")))?;
        let config = if self.accept_invalid_certs {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(danger::AcceptAny(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            match &self.ca_pem {
                Some(pem) => {
                    use rustls::pki_types::pem::PemObject;
                    use rustls::pki_types::CertificateDer;
                    for cert in CertificateDer::pem_slice_iter(pem) {
                        let cert = cert.map_err(|e| {
                            config_error(format!("the CA certificates are not valid PEM: {e}"))
                        })?;
                        roots.add(cert).map_err(|e| {
                            config_error(format!("a CA certificate was refused: {e}"))
                        })?;
                    }
                }
                None => {
                    let found = fred::rustls_native_certs::load_native_certs();
                    for cert in found.certs {
                        // One unparsable system certificate should not disable all the others.
                        let _ = roots.add(cert);
                    }
                }
            }
            if roots.is_empty() {
                return Err(config_error(
                    "TLS: no trusted CA certificate (give one with Tls::with_ca_pem or ssl_ca_certs=)",
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(fred::types::config::TlsConfig::from(config))
    }
}

/// The error for a TLS setting in a build without the `tls` feature.
#[cfg(not(feature = "tls"))]
pub(crate) fn tls_not_compiled(what: &str) -> Error {
    config_error(format!(
        "{what} asks for TLS, but redlock-fred was built without its `tls` feature; enable it rather than connect in plaintext"
    ))
}

#[cfg(feature = "tls")]
mod danger {
    use std::sync::Arc;

    use fred::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use fred::rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use fred::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use fred::rustls::{DigitallySignedStruct, Error, SignatureScheme};

    /// Accepts any certificate, but still checks that the handshake is signed by the key in it
    /// (so the session is at least bound to the certificate presented).
    #[derive(Debug)]
    pub(super) struct AcceptAny(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use redlock_core::{Error, InvalidInput};

    use crate::RedisBackend;

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_is_an_error_not_plaintext() {
        for url in [
            "rediss://:secret@127.0.0.1:6390/0",
            "rediss://127.0.0.1:26390/0?master=m&ssl_cert_reqs=CERT_NONE",
        ] {
            match RedisBackend::new(url) {
                Err(Error::InvalidInput(InvalidInput::Config(m))) => {
                    assert!(m.contains("`tls` feature"), "{m}");
                    assert!(!m.contains("secret"), "{m}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_configs_build_without_network() {
        for url in [
            "rediss://:secret@127.0.0.1:6390/0",
            "rediss://127.0.0.1:26390/0?master=m&ssl_cert_reqs=CERT_NONE",
        ] {
            RedisBackend::new(url).expect(url);
        }
        let bad_pem = crate::Tls::new().with_ca_pem(b"not a certificate".to_vec());
        let error = RedisBackend::new(crate::RedisConfig::new("h", 1).with_tls(bad_pem))
            .expect_err("no CA in that PEM");
        assert!(matches!(
            error,
            Error::InvalidInput(InvalidInput::Config(_))
        ));
    }
}
