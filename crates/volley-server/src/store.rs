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

/// Mode of the data directory: only the node's user may list or enter it.
const DIR_MODE: u32 = 0o700;
/// Mode of every secret the node writes (its key, the ticket key, the database).
pub(crate) const SECRET_MODE: u32 = 0o600;

/// Makes `path` readable by its owner only, if it is more open than `mode`; says so when it
/// had to (a file left readable by an older node, or copied in).
pub(crate) fn restrict(path: &Path, mode: u32) -> Result<(), DataDirError> {
    use std::os::unix::fs::PermissionsExt;
    let md = match fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(path, e)),
    };
    let now = md.permissions().mode() & 0o777;
    if now & !mode != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| err(path, e))?;
        tracing::warn!(path = %path.display(), was = format!("{now:o}"), now = format!("{mode:o}"), "a secret was readable by others; restricted it");
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(SECRET_MODE)
        .open(&tmp)
        .map_err(|e| err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| err(&tmp, e))?;
    f.sync_all().map_err(|e| err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| err(path, e))
}

pub(crate) fn load_or_create(dir: &Path) -> Result<Stored, DataDirError> {
    fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    restrict(dir, DIR_MODE)?;
    let (cert_p, key_p, tk_p) = (dir.join(CERT), dir.join(KEY), dir.join(TICKET_KEY));
    for secret in [&key_p, &tk_p] {
        restrict(secret, SECRET_MODE)?;
    }
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
