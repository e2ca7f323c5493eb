//! TLS to PostgreSQL over the build's one TLS stack (rustls on aws-lc), with libpq's
//! `sslmode` meanings: `disable`, `prefer` and `require` encrypt without checking the
//! certificate (require refuses a server without TLS); `verify-full` checks the chain
//! against `sslrootcert` (RDS's bundle, say) or the system's roots, and the host name.
//!
//! tokio-postgres itself knows only disable/prefer/require and no `sslrootcert`, so
//! those two are taken out of the URL here and applied to the rustls config.

use crate::{Error, Reason, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, as far as aws_cluster supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

impl TlsMode {
    /// From `disable`, `prefer`, `require` or `verify-full` (`verify_full` too).
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "disable" => Ok(TlsMode::Disable),
            "prefer" => Ok(TlsMode::Prefer),
            "require" => Ok(TlsMode::Require),
            "verify-full" | "verify_full" => Ok(TlsMode::VerifyFull),
            other => Err(invalid(
                "ssl",
                &format!("sslmode {other:?} is not one of disable, prefer, require, verify-full"),
            )),
        }
    }

    /// What tokio-postgres is told: it only negotiates; rustls verifies.
    pub fn ssl_mode(self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyFull => SslMode::Require,
        }
    }
}

/// The URL without `sslmode` and `sslrootcert`, and their values. Both URL
/// (`postgres://...?sslmode=verify-full`, values percent-decoded) and key=value
/// (`host=... sslmode = 'verify-full'`, as libpq reads it) forms. A key=value string
/// that does not parse is returned whole, for tokio-postgres to refuse.
pub fn split_url(url: &str) -> (String, Option<String>, Option<String>) {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_owned());
            true
        }
        "sslrootcert" => {
            root = Some(value.to_owned());
            true
        }
        _ => false,
    };
    let rest = if let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k, &percent_decoded(v))
            })
            .collect();
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if url.contains("://") {
        url.to_owned()
    } else {
        match conninfo_pairs(url) {
            Some(pairs) => {
                let mut rest = String::with_capacity(url.len());
                let mut from = 0;
                for (key, value, span) in pairs {
                    if take(key, &value) {
                        rest.push_str(&url[from..span.start]);
                        from = span.end;
                    }
                }
                rest.push_str(&url[from..]);
                rest.split_whitespace().collect::<Vec<_>>().join(" ")
            }
            None => url.to_owned(),
        }
    };
    (rest, mode, root)
}

/// libpq's `key = value` pairs (spaces around `=` allowed; a value single-quoted, with
/// `\` escapes), each with its value unescaped and its span in `text`.
fn conninfo_pairs(text: &str) -> Option<Vec<(&str, String, std::ops::Range<usize>)>> {
    let bytes = text.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut pairs = Vec::new();
    let mut i = skip_ws(0);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' {
            i += 1;
        }
        let key = &text[start..i];
        i = skip_ws(i);
        if key.is_empty() || bytes.get(i) != Some(&b'=') {
            return None;
        }
        i = skip_ws(i + 1);
        let quoted = bytes.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        let mut value = Vec::new();
        loop {
            match bytes.get(i) {
                None if quoted => return None,
                None => break,
                Some(b'\'') if quoted => {
                    i += 1;
                    break;
                }
                Some(b) if !quoted && b.is_ascii_whitespace() => break,
                Some(b'\\') => {
                    value.push(*bytes.get(i + 1)?);
                    i += 2;
                }
                Some(b) => {
                    value.push(*b);
                    i += 1;
                }
            }
        }
        pairs.push((key, String::from_utf8(value).ok()?, start..i));
        i = skip_ws(i);
    }
    Some(pairs)
}

/// `%XX` escapes decoded, as libpq reads URL parameters; a bad escape is kept as is.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// The connector for `mode`; `ca_file` (PEM) is the trust for verify-full, else the
/// system's roots.
pub fn connector(mode: TlsMode, ca_file: Option<&str>) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(Reason::Internal, format!("TLS setup: {e}")))?;
    let config = match mode {
        TlsMode::VerifyFull => builder
            .with_root_certificates(roots(ca_file)?)
            .with_no_client_auth(),
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn roots(ca_file: Option<&str>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| invalid("ssl_ca_file", &format!("cannot read {path}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| invalid("ssl_ca_file", &format!("{path}: {e}")))?;
                store
                    .add(cert)
                    .map_err(|e| invalid("ssl_ca_file", &format!("{path}: {e}")))?;
            }
            if store.is_empty() {
                return Err(invalid(
                    "ssl_ca_file",
                    &format!("{path} holds no certificate"),
                ));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(cert);
            }
        }
    }
    Ok(store)
}

fn invalid(key: &'static str, message: &str) -> Error {
    Error::new(Reason::InvalidArgument, format!("option {key}: {message}")).with_detail("key", key)
}

/// libpq's `require`: encrypted, the certificate not checked (its handshake signature is).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_come_out_of_both_url_forms() {
        let (url, mode, root) =
            split_url("postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=/ca.pem&x=1");
        assert_eq!(url, "postgres://u:p@h:5432/db?x=1");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let (url, mode, _) = split_url("postgres://u:p@h/db?sslmode=require");
        assert_eq!(
            (url.as_str(), mode.as_deref()),
            ("postgres://u:p@h/db", Some("require"))
        );
        let (url, mode, root) = split_url("host=h user=u sslmode=verify-full sslrootcert=/c");
        assert_eq!(url, "host=h user=u");
        assert_eq!(
            (mode.as_deref(), root.as_deref()),
            (Some("verify-full"), Some("/c"))
        );
        assert_eq!(split_url("postgres://h/db").0, "postgres://h/db");
    }

    #[test]
    fn key_value_strings_are_read_as_libpq_reads_them() {
        let (url, mode, root) =
            split_url("host=h password='p w\\'d' sslmode = require  sslrootcert='/a b.pem' port=5");
        assert_eq!(url, "host=h password='p w\\'d' port=5");
        assert_eq!(
            (mode.as_deref(), root.as_deref()),
            (Some("require"), Some("/a b.pem"))
        );
        // Unparseable: left whole, for tokio-postgres to refuse.
        assert_eq!(split_url("host=h sslmode").0, "host=h sslmode");
        let (_, _, root) = split_url("postgres://h/db?sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
    }

    #[test]
    fn modes_parse_and_a_missing_ca_file_names_the_key() {
        assert_eq!(
            TlsMode::parse("verify-full").expect("mode"),
            TlsMode::VerifyFull
        );
        assert_eq!(
            TlsMode::parse("bogus").expect_err("bad").detail("key"),
            Some("ssl")
        );
        let e = connector(TlsMode::VerifyFull, Some("/nonexistent/ca.pem"))
            .err()
            .expect("no file");
        assert_eq!(e.detail("key"), Some("ssl_ca_file"));
    }
}
