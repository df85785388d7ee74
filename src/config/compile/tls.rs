//! The TLS keys of SPEC section 9: the listeners' certificate and key files and a
//! master's `tls_ca` are read and loaded here, so `check` and a reload report a file
//! that is missing or wrong with its key path, and a rejected reload keeps the running
//! certificates.

use super::Errors;
use crate::config::bounds::MAX_PATH_BYTES;
use crate::config::Endpoint;
use crate::tls::connect::Trust;
use crate::tls::listen::{self, Acceptor, PemFile};
use http::Uri;
use std::path::Path;

/// `{prefix}tls_cert` and `{prefix}tls_key`: both or neither. `Some(None)` when
/// neither is set; `None` after an error.
pub(super) fn listener(
    errs: &mut Errors,
    prefix: &str,
    cert: &str,
    key: &str,
) -> Option<Option<Acceptor>> {
    let (cert_path, key_path) = (format!("{prefix}tls_cert"), format!("{prefix}tls_key"));
    if !file_name(errs, &cert_path, cert) | !file_name(errs, &key_path, key) {
        return None;
    }
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => Some(None),
        (false, true) => errs.fail(&key_path, format!("is required when {cert_path} is set")),
        (true, false) => errs.fail(&cert_path, format!("is required when {key_path} is set")),
        (false, false) => match listen::acceptor(Path::new(cert), Path::new(key)) {
            Ok(acceptor) => Some(Some(acceptor)),
            Err(e) => match e.file {
                PemFile::Cert => errs.fail(&cert_path, e.message),
                PemFile::Key => errs.fail(&key_path, e.message),
            },
        },
    }
}

/// A master's `tls_ca`: `Some(None)` when unset (the system roots), `None` after an
/// error.
pub(super) fn trust(errs: &mut Errors, path: &str, ca: &str) -> Option<Option<Trust>> {
    if ca.is_empty() {
        return Some(None);
    }
    if !file_name(errs, path, ca) {
        return None;
    }
    match Trust::bundle(Path::new(ca)) {
        Ok(t) => Some(Some(t)),
        Err(e) => errs.fail(path, e),
    }
}

/// A file name of at most [`MAX_PATH_BYTES`] with no NUL; false after an error.
fn file_name(errs: &mut Errors, path: &str, v: &str) -> bool {
    if v.contains('\0') {
        errs.push(path, "must not contain a NUL character");
        return false;
    }
    if v.len() > MAX_PATH_BYTES {
        errs.length(path, v, MAX_PATH_BYTES);
        return false;
    }
    true
}

/// The endpoint of a checked `http`/`https` URL.
pub(super) fn endpoint(
    errs: &mut Errors,
    path: &str,
    uri: &Uri,
    ca: Option<&Trust>,
) -> Option<Endpoint> {
    match Endpoint::with_tls(uri, ca) {
        Ok(e) => Some(e),
        Err(e) => errs.fail(path, e),
    }
}
