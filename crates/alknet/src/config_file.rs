//! Reading `alknet.toml` and `relay.toml`: errors name the file, the line and the reason;
//! relative paths inside are resolved against the file's directory.

use std::path::{Path, PathBuf};

use alknet_node::{DynamicConfig, NodeConfig, TlsConfig};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::failure::Failure;

/// Parses the TOML file at `path` into `T`; an error reads `file:line:column: reason`.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::usage(format!(
            "{}: {e} (give the config file with --config)",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        let place = match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{column}")
            }
            None => String::new(),
        };
        Failure::usage(format!(
            "{}{place}: {}",
            path.display(),
            e.message().trim_end()
        ))
    })
}

/// `path` as written, or relative to the directory of the config file.
pub fn beside(config: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    config
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or_else(|| path.to_path_buf(), |dir| dir.join(path))
}

/// Reads and validates a node's config file, with its file paths resolved.
pub fn read_node_config(path: &Path) -> Result<NodeConfig, Failure> {
    let mut config: NodeConfig = read_toml(path)?;
    if let Some(key) = &config.key_file {
        config.key_file = Some(beside(path, key));
    }
    if let TlsConfig::X509 { cert, key } = &mut config.tls {
        *cert = beside(path, cert);
        *key = beside(path, key);
    }
    config
        .validate()
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    Ok(config)
}

/// The top-level keys of the dynamic part (reloadable without a restart).
fn dynamic_keys() -> Vec<String> {
    match serde_json::to_value(DynamicConfig::default()) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The static settings (top-level keys) that differ between two configs: each needs a restart.
pub fn static_changes(running: &NodeConfig, new_config: &NodeConfig) -> Vec<String> {
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) = (
        serde_json::to_value(running),
        serde_json::to_value(new_config),
    ) else {
        return Vec::new();
    };
    let dynamic = dynamic_keys();
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changed: Vec<String> = keys
        .into_iter()
        .filter(|k| !dynamic.contains(k) && old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    // `pubsub` is dynamic except its backplane.
    if running.pubsub.backplane != new_config.pubsub.backplane {
        changed.push("pubsub.backplane".into());
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("alknet.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_parse_error_names_file_line_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "listen = \"127.0.0.1:0\"\n\n[limits]\nconections_per_ip = 3\n",
        );
        let err = read_node_config(&path).unwrap_err();
        assert_eq!(err.exit, 2);
        assert!(
            err.message.starts_with(&format!("{}:4:1:", path.display())),
            "{err}"
        );
        assert!(err.message.contains("conections_per_ip"), "{err}");
    }

    #[test]
    fn a_relative_key_file_is_found_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "listen = \"127.0.0.1:0\"\nkey_file = \"node.key\"\n",
        );
        let config = read_node_config(&path).unwrap();
        assert_eq!(config.key_file, Some(dir.path().join("node.key")));
    }

    #[test]
    fn static_changes_name_the_settings_and_ignore_the_dynamic_part() {
        let old: NodeConfig = toml::from_str("listen = \"127.0.0.1:1\"").unwrap();
        let new: NodeConfig =
            toml::from_str("listen = \"127.0.0.1:2\"\ntcp = false\n[[auth.peers]]\nid = \"a\"")
                .unwrap();
        assert_eq!(static_changes(&old, &new), ["listen", "tcp"]);
        let nats: NodeConfig = toml::from_str(
            "listen = \"127.0.0.1:1\"\n[pubsub.backplane.nats]\nservers = [\"nats://n:4222\"]",
        )
        .unwrap();
        assert_eq!(static_changes(&old, &nats), ["pubsub.backplane"]);
    }
}
