//! `[http]`: what the node's HTTP side serves. Static (a restart applies it).
//!
//! ```
//! let http: alknet_http::HttpConfig = serde_json::from_str(r#"{
//!     "decoy": { "dir": "/srv/www" },
//!     "websocket": true,
//!     "gateway": { "require_identity": true }
//! }"#).unwrap();
//! assert!(http.websocket.enabled && !http.websocket.require_identity);
//! assert!(http.gateway.require_identity);
//! assert!(!http.openapi.enabled);
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The HTTP side of the node (`[http]`). Every path the enabled features do not claim is the
/// decoy's, and so is every request to a feature that requires an identity the request lacks:
/// to anyone without one, the port looks like an ordinary web server.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// What the web site shows (default: a built-in plain page).
    #[serde(default)]
    pub decoy: Decoy,
    /// The `alknet/call` WebSocket carrier at `/alknet/call` (default off).
    #[serde(default)]
    pub websocket: Feature,
    /// The HTTP gateway: `POST /call/<operation>` (default off).
    #[serde(default)]
    pub gateway: Feature,
    /// `GET /openapi.json`, listing what the caller may call (default off).
    #[serde(default)]
    pub openapi: Feature,
}

/// The site every unclaimed path shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Decoy {
    /// A built-in plain page at `/`, a plain 404 elsewhere.
    #[default]
    Builtin,
    /// Files from a directory (`index.html` for directories); a plain 404 for what is missing.
    Dir(PathBuf),
    /// Every request forwarded to an upstream `http://` or `https://` base URL.
    Proxy(String),
}

/// An optional HTTP feature: `false`, `true`, or `{ require_identity = true }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Feature {
    /// Whether the feature is served.
    pub enabled: bool,
    /// Whether only a request with an identity (a valid bearer token or TLS client key) reaches
    /// it; any other request gets the decoy, as if the feature did not exist.
    pub require_identity: bool,
}

impl Feature {
    /// On, for everyone.
    pub const ON: Feature = Feature {
        enabled: true,
        require_identity: false,
    };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureOptions {
    #[serde(default)]
    require_identity: bool,
}

impl<'de> Deserialize<'de> for Feature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = Feature;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or { require_identity = true|false }")
            }
            fn visit_bool<E: serde::de::Error>(self, enabled: bool) -> Result<Feature, E> {
                Ok(Feature {
                    enabled,
                    require_identity: false,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Feature, A::Error> {
                let o =
                    FeatureOptions::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Feature {
                    enabled: true,
                    require_identity: o.require_identity,
                })
            }
        }
        d.deserialize_any(Shape)
    }
}

impl Serialize for Feature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.enabled && self.require_identity {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry("require_identity", &true)?;
            map.end()
        } else {
            s.serialize_bool(self.enabled)
        }
    }
}

impl HttpConfig {
    /// Checks what can be checked before binding: a proxy URL's scheme, a directory's presence.
    pub fn validate(&self) -> Result<(), String> {
        match &self.decoy {
            Decoy::Builtin => Ok(()),
            Decoy::Dir(dir) if dir.is_dir() => Ok(()),
            Decoy::Dir(dir) => Err(format!(
                "http.decoy.dir: {} is not a directory",
                dir.display()
            )),
            Decoy::Proxy(url) => {
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && url.parse::<axum::http::Uri>().is_ok();
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "http.decoy.proxy: {url:?} is not an http:// or https:// URL"
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let c: HttpConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, HttpConfig::default());
        assert_eq!(c.decoy, Decoy::Builtin);
        let c: HttpConfig = serde_json::from_str(
            r#"{"decoy":{"proxy":"https://example.org"},"openapi":{"require_identity":false},"websocket":false}"#,
        )
        .unwrap();
        assert_eq!(c.decoy, Decoy::Proxy("https://example.org".into()));
        assert_eq!(c.openapi, Feature::ON);
        assert!(!c.websocket.enabled);
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["openapi"], serde_json::json!(true));
        let err = serde_json::from_str::<HttpConfig>(r#"{"gateway":{"require_id":true}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("require_id"), "{err}");
        assert!(serde_json::from_str::<HttpConfig>(r#"{"decoy":"static"}"#).is_err());
        assert!(HttpConfig {
            decoy: Decoy::Proxy("ftp://x".into()),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
