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

/// The URL without `sslmode` and `sslrootcert`, and their values (an empty one counts as
/// unset, as in libpq). Both URL (`postgres://...?sslmode=verify-full`, values
/// percent-decoded) and key=value (`host=... sslmode = 'verify-full'`, as libpq reads
/// it) forms; what is kept of a key=value string is left byte for byte. A key=value
/// string that does not parse is an error naming `url` (never echoing it): read past,
/// its sslmode would be silently lost.
pub fn split_url(url: &str) -> Result<(String, Option<String>, Option<String>)> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: String| {
        let slot = match key {
            "sslmode" => &mut mode,
            "sslrootcert" => &mut root,
            _ => return false,
        };
        *slot = Some(value).filter(|v| !v.is_empty());
        true
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), None, None));
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k, percent_decoded(v))
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, mode, root));
    }
    let pairs = conninfo_pairs(url).ok_or_else(|| {
        invalid(
            "url",
            "the url is neither postgres://... nor a key=value string libpq would read \
             (an unclosed quote, a trailing backslash, or a word without =)",
        )
    })?;
    let mut rest = String::with_capacity(url.len());
    let mut from = 0;
    for (key, value, span) in pairs {
        if take(key, value) {
            rest.push_str(&url[from..span.start]);
            // The separating whitespace goes with the pair.
            from = span.end + url[span.end..].len() - url[span.end..].trim_start().len();
        }
    }
    rest.push_str(&url[from..]);
    Ok((rest.trim_end().to_owned(), mode, root))
}

/// libpq's `key = value` pairs (whitespace around `=` allowed; a value single-quoted,
/// with `\` escapes), each with its value unescaped and its byte span in `text`.
fn conninfo_pairs(text: &str) -> Option<Vec<(&str, String, std::ops::Range<usize>)>> {
    let mut chars = text.char_indices().peekable();
    let mut pairs = Vec::new();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    let at = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        chars.peek().map_or(text.len(), |(i, _)| *i)
    };
    loop {
        skip_ws(&mut chars);
        let start = at(&mut chars);
        if start == text.len() {
            return Some(pairs);
        }
        while chars
            .next_if(|(_, c)| !c.is_whitespace() && *c != '=')
            .is_some()
        {}
        let key = &text[start..at(&mut chars)];
        skip_ws(&mut chars);
        if key.is_empty() || chars.next_if(|(_, c)| *c == '=').is_none() {
            return None;
        }
        skip_ws(&mut chars);
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        loop {
            match chars.peek().map(|(_, c)| *c) {
                None if quoted => return None,
                None => break,
                Some('\'') if quoted => {
                    chars.next();
                    break;
                }
                Some(c) if !quoted && c.is_whitespace() => break,
                Some('\\') => {
                    chars.next();
                    value.push(chars.next()?.1);
                }
                Some(c) => {
                    chars.next();
                    value.push(c);
                }
            }
        }
        if !quoted && value.is_empty() {
            return None;
        }
        pairs.push((key, value, start..at(&mut chars)));
    }
}

/// `%XX` escapes decoded, as libpq reads URL parameters; anything else is kept as is.
fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_or_else(|_| text.to_owned(), |decoded| decoded.into_owned())
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

    fn split(url: &str) -> (String, Option<String>, Option<String>) {
        split_url(url).expect("parses")
    }

    #[test]
    fn sslmode_and_sslrootcert_come_out_of_both_url_forms() {
        let (url, mode, root) =
            split("postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=/ca.pem&x=1");
        assert_eq!(url, "postgres://u:p@h:5432/db?x=1");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let (url, mode, _) = split("postgresql://u:p@h/db?sslmode=require");
        assert_eq!(
            (url.as_str(), mode.as_deref()),
            ("postgresql://u:p@h/db", Some("require"))
        );
        let (url, mode, root) = split("host=h user=u sslmode=verify-full sslrootcert=/c");
        assert_eq!(url, "host=h user=u");
        assert_eq!(
            (mode.as_deref(), root.as_deref()),
            (Some("verify-full"), Some("/c"))
        );
        assert_eq!(split("postgres://h/db").0, "postgres://h/db");
        let (_, _, root) = split("postgres://h/db?sslrootcert=%2Fetc%2Fca.pem&x=%+a");
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(percent_decoded("%+a%4"), "%+a%4");
    }

    #[test]
    fn key_value_strings_are_read_as_libpq_reads_them() {
        let (url, mode, root) =
            split("sslmode = require host=h password='p  w\\'d'\tsslrootcert='/a b.pem' port=5");
        // What is kept is left byte for byte, quoted whitespace included.
        assert_eq!(url, "host=h password='p  w\\'d'\tport=5");
        assert_eq!(
            (mode.as_deref(), root.as_deref()),
            (Some("require"), Some("/a b.pem"))
        );
        // Empty is unset; a value with :// is still a key=value string.
        let (url, mode, root) = split("host=h password=a://b sslrootcert='' sslmode=''");
        assert_eq!(
            (url.as_str(), mode, root),
            ("host=h password=a://b", None, None)
        );
        // What libpq would not read fails, naming url: and never echoing it.
        for bad in [
            "host=h sslmode",
            "host=h password=ab\\",
            "host='h",
            "=x host=h",
        ] {
            let e = split_url(bad).expect_err(bad);
            assert_eq!(e.detail("key"), Some("url"), "{bad}");
            assert!(!e.message.contains("host"), "{}", e.message);
        }
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
