//! The shapes other languages mirror, as data: one fully populated sample of every configuration
//! and contract type, and the protocol's constants. The Node.js package checks its camelCase
//! types and its single camelCase ↔ snake_case mapping against [`samples`] and [`constants`] in
//! its test suite, so a field added here and not there (or the reverse) fails `npm test`.
//!
//! Every sample is a struct literal, so adding a field to a Rust type does not compile until the
//! sample sets it: the list cannot fall behind the types.

use std::collections::HashMap;

use alknet_call::access::Access;
use alknet_call::framing::{DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT};
use alknet_call::registry::ErrorDecl;
use alknet_call::{
    CallOptions, ErrorCode, OperationSpec, OperationType, PubSubPolicy, TopicRule, Visibility,
};
use alknet_core::config::{ApiKeyEntry, AuthConfig, PeerEntry};
use alknet_core::Identity;
use alknet_http::{Decoy, Feature, HttpConfig};
use serde_json::{json, Value};

use alknet_ssh::policy::{
    Action, DefaultAction, Direction, ForwardRule, ForwardingPolicy, PortSpec, Transport as Carrier,
};

use crate::config::{
    BackplaneConfig, DynamicConfig, IrohSettings, LimitsConfig, NodeConfig, PubSubConfig,
    ServicesConfig, SshSettings, TlsConfig,
};
use crate::connect::{ConnectConfig, Transport};
use alknet_nats::NatsConfig;

fn strings(s: &str) -> Vec<String> {
    vec![s.to_string()]
}

fn resources() -> HashMap<String, Vec<String>> {
    HashMap::from([("todo".to_string(), strings("write"))])
}

/// One fully populated value of each shared type, by type name, as JSON (snake_case keys, as
/// they appear in `alknet.toml` and on the wire).
pub fn samples() -> Value {
    let peer = PeerEntry {
        id: "alice".into(),
        fingerprints: strings("ed25519:00"),
        token_hash: Some("sha256:00".into()),
        scopes: strings("todo:write"),
        resources: resources(),
        enabled: true,
    };
    let api_key = ApiKeyEntry {
        prefix: "ci".into(),
        hash: "sha256:00".into(),
        scopes: strings("read"),
        resources: resources(),
        expires_at: Some(1),
    };
    let rule = TopicRule {
        pattern: "news/>".into(),
        publish: Some(strings("news:write")),
        subscribe: Some(strings("news:read")),
        anonymous: true,
    };
    let auth = AuthConfig {
        peers: vec![peer.clone()],
        api_keys: vec![api_key.clone()],
    };
    let pubsub = PubSubPolicy {
        rules: vec![rule.clone()],
    };
    let forward_rule = ForwardRule {
        peers: strings("alice"),
        hosts: strings("10.0.0.0/8"),
        ports: vec![PortSpec::Port(22), PortSpec::Text("8000-8999".into())],
        direction: Direction::Connect,
        transports: vec![Carrier::Iroh, Carrier::Ssh],
        // A rule names sockets or hosts, never both: the key is what the sample carries.
        sockets: Vec::new(),
        action: Action::Allow,
    };
    let forwarding = ForwardingPolicy {
        default: DefaultAction::Public,
        rules: vec![forward_rule.clone()],
        max_channels: Some(1),
    };
    let ssh = SshSettings {
        listen: Some(([127, 0, 0, 1], 0).into()),
        user_ca: strings("ssh-ed25519 AAAA ca"),
    };
    let limits = LimitsConfig {
        connections_per_ip: Some(1),
        connections: Some(1),
        handshakes_per_ip: Some(1),
        handshakes: Some(1),
        relay_connections: Some(1),
        streams_per_connection: Some(1),
        max_concurrent_requests: Some(1),
        subscription_queue: Some(1),
        subscription_queue_bytes: Some(1),
        connection_queue_bytes: Some(1),
        anonymous_max_frame_bytes: Some(1024),
        connection_input_bytes: Some(1024),
        anonymous_input_bytes: Some(1024),
        frame_deadline_ms: Some(1),
        quic_idle_timeout_ms: Some(1),
        default_timeout_ms: Some(1),
        max_timeout_ms: Some(1),
        max_frame_bytes: Some(1024),
    };
    let iroh = IrohSettings {
        relay: Some("none".into()),
        relay_ca: Some(String::new()),
        direct: Some(true),
    };
    let nats = NatsConfig {
        servers: strings("nats://127.0.0.1:4222"),
        credentials: Some("fleet.creds".into()),
        subject_prefix: Some("alknet".into()),
    };
    let http = HttpConfig {
        decoy: Decoy::Dir("site".into()),
        websocket: Feature::ON,
        gateway: Feature {
            enabled: true,
            require_identity: true,
        },
        openapi: Feature::ON,
    };
    let node = NodeConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        key_file: Some("node.key".into()),
        tls: TlsConfig::Raw,
        tcp: true,
        iroh: Some(iroh.clone()),
        limits: limits.clone(),
        drain_timeout_ms: Some(1),
        handshake_timeout_ms: Some(1),
        services: ServicesConfig {
            call: true,
            http: true,
            ssh: true,
            tunnel: true,
        },
        http: http.clone(),
        auth: auth.clone(),
        pubsub: PubSubConfig {
            rules: pubsub.rules.clone(),
            backplane: Some(BackplaneConfig { nats: nats.clone() }),
        },
        ssh: ssh.clone(),
        forwarding: forwarding.clone(),
    };
    let access = Access {
        required_scopes: strings("a"),
        required_scopes_any: strings("b"),
        resource_type: Some("todo".into()),
        resource_action: Some("write".into()),
        resource_id_path: Some("/id".into()),
    };
    let error = ErrorDecl {
        code: "ITEM_NOT_OWNED".into(),
        description: Some("d".into()),
        schema: Some(json!({})),
    };
    let spec = OperationSpec {
        name: "todo/create".into(),
        kind: OperationType::Mutation,
        description: Some("d".into()),
        input_schema: json!({}),
        output_schema: json!({}),
        errors: vec![error.clone()],
        access: access.clone(),
        visibility: Visibility::External,
    };
    let identity = Identity {
        id: "alice".into(),
        scopes: strings("a"),
        resources: resources(),
    };
    let dynamic = DynamicConfig {
        auth,
        pubsub,
        forwarding: forwarding.clone(),
    };
    let connect = ConnectConfig {
        address: Some("127.0.0.1:4433".into()),
        fingerprint: Some("ed25519:00".into()),
        iroh: Some("iroh:00".into()),
        relay: Some("https://relay.example".into()),
        relay_ca: Some(String::new()),
        iroh_addrs: strings("127.0.0.1:4434"),
        transport: Some(Transport::Tcp),
        connect_timeout_ms: Some(1),
    };
    let tls: Vec<Value> = [
        TlsConfig::Raw,
        TlsConfig::SelfSigned {
            names: strings("localhost"),
        },
        TlsConfig::X509 {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        },
    ]
    .iter()
    .map(|t| json!(t))
    .collect();
    json!({
        "PeerEntry": peer,
        "ApiKeyEntry": api_key,
        "TopicRule": rule,
        "ForwardRule": forward_rule,
        "ForwardingPolicy": forwarding,
        "SshSettings": ssh,
        "DynamicConfig": dynamic,
        "LimitsConfig": limits,
        "IrohSettings": iroh,
        "NodeConfig": node,
        "HttpConfig": http,
        "ServicesConfig": node.services,
        "Access": access,
        "ErrorDecl": error,
        "OperationSpec": spec,
        "Identity": identity,
        "TlsConfig": tls,
        "ConnectConfig": connect,
        "NatsConfig": nats,
    })
}

/// The protocol's constants: error codes (with whether each is retryable) and frame limits.
pub fn constants() -> Value {
    let codes: Vec<Value> = ErrorCode::ALL
        .iter()
        .map(|c| json!({ "code": c.as_str(), "retryable": c.retryable() }))
        .collect();
    let call = CallOptions::default();
    json!({
        "error_codes": codes,
        "default_max_frame_bytes": DEFAULT_MAX_FRAME,
        "max_frame_limit_bytes": MAX_FRAME_LIMIT,
        "min_frame_limit_bytes": crate::config::MIN_FRAME_LIMIT,
        "default_timeout_ms": call.default_timeout.as_millis() as u64,
        "max_timeout_ms": call.max_timeout.as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_back_into_their_types() {
        let samples = samples();
        let _: NodeConfig = serde_json::from_value(samples["NodeConfig"].clone()).unwrap();
        let _: DynamicConfig = serde_json::from_value(samples["DynamicConfig"].clone()).unwrap();
        let _: OperationSpec = serde_json::from_value(samples["OperationSpec"].clone()).unwrap();
        let _: ConnectConfig = serde_json::from_value(samples["ConnectConfig"].clone()).unwrap();
        for tls in samples["TlsConfig"].as_array().unwrap() {
            let _: TlsConfig = serde_json::from_value(tls.clone()).unwrap();
        }
    }

    #[test]
    fn every_optional_field_is_present_in_the_samples() {
        let samples = samples();
        assert_eq!(samples["Access"].as_object().unwrap().len(), 5);
        assert_eq!(samples["ErrorDecl"].as_object().unwrap().len(), 3);
        assert_eq!(samples["LimitsConfig"].as_object().unwrap().len(), 18);
    }
}
