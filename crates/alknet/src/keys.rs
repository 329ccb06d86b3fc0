//! `alknet keygen`, `alknet id`, `alknet token new`, and where a command finds its key.

use std::path::{Path, PathBuf};

use alknet_core::fingerprint::token_hash;
use alknet_core::{KeyError, SecretKey};
use rand::RngCore;

use crate::failure::{Failure, Outcome};

/// The default key file: `$XDG_CONFIG_HOME/alknet/key.pem`, else `~/.config/alknet/key.pem`.
pub fn default_key_path() -> Option<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(config.join("alknet").join("key.pem"))
}

fn key_failure(e: KeyError) -> Failure {
    Failure::usage(e)
}

/// Loads the key a command was given (`--key`/`ALKNET_KEY`), else the default key file if it
/// exists. `None`: no key given and none at the default path.
pub fn load_key(given: Option<&Path>) -> Result<Option<SecretKey>, Failure> {
    if let Some(path) = given {
        return SecretKey::load(path).map(Some).map_err(key_failure);
    }
    match default_key_path() {
        Some(path) if path.exists() => SecretKey::load(&path).map(Some).map_err(key_failure),
        _ => Ok(None),
    }
}

/// `alknet keygen [-o FILE]`: a new key, mode 0600, never over an existing file.
pub fn keygen(output: Option<PathBuf>) -> Outcome {
    let path = match output {
        Some(path) => path,
        None => {
            let path = default_key_path().ok_or_else(|| {
                Failure::usage(
                    "no default key path: neither XDG_CONFIG_HOME nor HOME is set; give -o FILE",
                )
            })?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
            }
            path
        }
    };
    if path.exists() {
        return Err(Failure::usage(format!(
            "{} already exists; keygen never overwrites a key (remove it first, or choose another file with -o)",
            path.display()
        )));
    }
    let key = SecretKey::generate();
    key.save(&path).map_err(key_failure)?;
    eprintln!("wrote {}", path.display());
    println!("{}", key.public().fingerprint());
    Ok(())
}

/// `alknet id [KEY]`: the fingerprint and the iroh node id of a key.
pub fn id(key: Option<PathBuf>) -> Outcome {
    let key = match key {
        Some(path) => SecretKey::load(&path).map_err(key_failure)?,
        None => load_key(std::env::var_os("ALKNET_KEY").map(PathBuf::from).as_deref())?
            .ok_or_else(|| {
                Failure::usage(
                    "no key: give a key file, set ALKNET_KEY, or create one with `alknet keygen`",
                )
            })?,
    };
    let public = key.public();
    println!("fingerprint {}", public.fingerprint());
    println!(
        "iroh        {}{}",
        alknet_endpoint::TICKET_SCHEME,
        hex(&public.to_bytes())
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `alknet token new --prefix P`: a fresh `alk_<prefix>_<secret>`. The token goes to stdout,
/// the `[[auth.api_keys]]` entry (its hash, never the token) to stderr.
pub fn token_new(prefix: &str, scopes: &[String]) -> Outcome {
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Failure::usage(format!(
            "--prefix {prefix:?}: use ASCII letters and digits only (it is the public part of the token, e.g. `ci` or `deploy2`)"
        )));
    }
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!("alk_{prefix}_{}", hex(&secret));
    let quoted = |s: &str| toml::Value::String(s.to_string()).to_string();
    let scopes: Vec<String> = scopes.iter().map(|s| quoted(s)).collect();
    eprintln!(
        "# add to alknet.toml, then reload (kill -HUP, or `alknet reload`):\n[[auth.api_keys]]\nprefix = {}\nhash = {}\nscopes = [{}]\n# the token is shown once, below; only its hash is kept",
        quoted(prefix),
        quoted(&token_hash(token.as_bytes())),
        scopes.join(", ")
    );
    println!("{token}");
    Ok(())
}
