//! Certificates for a TLS test server, made in-process with `rcgen` (no `openssl` command).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA and a server certificate for `localhost` / `127.0.0.1`, signed by it.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

fn made<T>(what: &str, result: Result<T, rcgen::Error>) -> T {
    result.unwrap_or_else(|e| panic!("making the TLS test server's {what}: {e}"))
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl TlsFiles {
    /// ECDSA P-256 keys, as the server's clients (rustls) and `redis-server` (OpenSSL) both
    /// accept. A CA distinct from the server certificate, so that the tests exercise a real
    /// chain: the client trusts the CA, never the server certificate itself.
    pub(crate) fn generate(dir: &Path) -> Self {
        let ca_key = made("CA key", KeyPair::generate());
        let mut ca_params = made("CA", CertificateParams::new(Vec::<String>::new()));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "redlock-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = made("CA certificate", ca_params.self_signed(&ca_key));
        let issuer = Issuer::new(ca_params, ca_key);

        let key = made("server key", KeyPair::generate());
        let mut params = made(
            "server certificate",
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]),
        );
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = made("server certificate", params.signed_by(&key, &issuer));

        let files = Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        write(&files.ca, &ca_cert.pem());
        write(&files.cert, &cert.pem());
        write(&files.key, &key.serialize_pem());
        files
    }
}
