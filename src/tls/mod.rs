//! TLS (SPEC section 9), with rustls and its `ring` provider: [`connect`] for the
//! outbound side (https `send_url`, `health_url` and alert webhook, always verified),
//! [`listen`] for the client and admin listeners (`tls_cert`/`tls_key`). Both speak
//! HTTP/1.1 only (ALPN `http/1.1`).

pub mod connect;
pub mod listen;

use rustls::crypto::CryptoProvider;
use std::sync::Arc;

/// The one crypto provider: ring (aws-lc-rs would need cmake and a C toolchain).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The ALPN protocol both sides offer.
const HTTP11: &[u8] = b"http/1.1";

/// The most bytes read from a PEM file (a system-size CA bundle is ~200 KiB).
const MAX_PEM_BYTES: u64 = 4 << 20;

/// The start of the SHA-256 of `parts`, in hex: tells loaded files apart (a reload
/// compares it; the pool keys connections by it).
fn digest(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    ctx.finish().as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a PEM file of at most [`MAX_PEM_BYTES`]; the error names the file.
fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{} is larger than {} MiB",
            path.display(),
            MAX_PEM_BYTES >> 20
        ));
    }
    Ok(bytes)
}
