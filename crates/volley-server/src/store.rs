//! The node's data directory: its QUIC identity and ticket key, created on first run.
//!
//! Files are written to a temporary name and renamed, so a crash mid-write never leaves a
//! half-written key that would stop the next start.

use std::fs;
use std::io::Write;
use std::path::Path;

use rand::RngCore;
use volley_net::tls::Identity;
use volley_proto::ticket::TicketKey;

use std::path::PathBuf;

/// The data directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("data directory {path}: {message}")]
pub(crate) struct DataDirError {
    /// The file or directory.
    pub(crate) path: PathBuf,
    /// What failed.
    pub(crate) message: String,
}

pub(crate) struct Stored {
    pub(crate) identity: Identity,
    pub(crate) ticket_key: TicketKey,
}

const CERT: &str = "node-cert.der";
const KEY: &str = "node-key.der";
const TICKET_KEY: &str = "ticket.key";

fn err(path: &Path, e: impl std::fmt::Display) -> DataDirError {
    DataDirError {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| err(&tmp, e))?;
    f.sync_all().map_err(|e| err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| err(path, e))
}

pub(crate) fn load_or_create(dir: &Path) -> Result<Stored, DataDirError> {
    fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let (cert_p, key_p, tk_p) = (dir.join(CERT), dir.join(KEY), dir.join(TICKET_KEY));
    let identity = if cert_p.exists() && key_p.exists() {
        let cert = fs::read(&cert_p).map_err(|e| err(&cert_p, e))?;
        let key = fs::read(&key_p).map_err(|e| err(&key_p, e))?;
        if cert.is_empty() || key.is_empty() {
            return Err(err(
                dir,
                "certificate or key file is empty; delete both to regenerate",
            ));
        }
        Identity::from_der(cert.into(), key.into())
    } else {
        let id = Identity::generate("volley-node").map_err(|e| err(&cert_p, e))?;
        write_atomic(&key_p, id.key.secret_pkcs8_der())?;
        write_atomic(&cert_p, &id.cert)?;
        id
    };
    let ticket_key = if tk_p.exists() {
        let bytes = fs::read(&tk_p).map_err(|e| err(&tk_p, e))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            err(
                &tk_p,
                "ticket key must be 32 bytes; delete it to regenerate",
            )
        })?;
        TicketKey::from_bytes(arr)
    } else {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        write_atomic(&tk_p, &k)?;
        TicketKey::from_bytes(k)
    };
    Ok(Stored {
        identity,
        ticket_key,
    })
}
