//! `GET /openapi.json`: an OpenAPI 3.1 document of the gateway, generated from the registry for
//! the caller (the operations its identity may call, with their JSON Schemas).

use std::sync::Arc;

use alknet_call::{CallService, OperationType};
use alknet_core::Identity;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::server::{bearer, App, ConnInfo};

/// Where the document is served.
pub const PATH: &str = "/openapi.json";

/// The schema of the gateway's error body.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "retryable"],
                "properties": {
                    "code": { "type": "string" },
                    "message": { "type": "string" },
                    "retryable": { "type": "boolean" },
                    "details": {}
                }
            }
        }
    })
}

/// An `operationId`: the name with every character but letters and digits as `_`.
fn operation_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The document for `identity`.
pub fn document(service: &CallService, identity: Option<&Identity>) -> Value {
    let listed = service.list_for(identity);
    let mut paths = Map::new();
    for entry in listed["operations"].as_array().into_iter().flatten() {
        let Some(name) = entry["name"].as_str() else {
            continue;
        };
        let Ok(spec) = service.schema_for(identity, name) else {
            continue;
        };
        let subscription = spec["type"] == json!(OperationType::Subscription);
        let success = if subscription {
            json!({
                "description": "Server-Sent Events: each item is a `data:` event holding one output; then `event: completed`, or `event: error` with the error body's `error`.",
                "content": { "text/event-stream": { "schema": { "type": "string" }, "x-item-schema": spec["output_schema"] } }
            })
        } else {
            json!({
                "description": "The output.",
                "content": { "application/json": { "schema": spec["output_schema"] } }
            })
        };
        let mut op = json!({
            "operationId": operation_id(name),
            "tags": [name.split('/').next().unwrap_or(name)],
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": spec["input_schema"] } }
            },
            "responses": {
                "200": success,
                "default": {
                    "description": "An error; see the status table of the gateway.",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            },
            "x-operation-type": spec["type"],
        });
        if let Some(d) = spec.get("description").and_then(Value::as_str) {
            op["summary"] = json!(d);
        }
        let open = spec["access"].as_object().is_none_or(|a| a.is_empty());
        op["security"] = if open {
            json!([{}, { "bearer": [] }])
        } else {
            json!([{ "bearer": [] }])
        };
        paths.insert(format!("/call/{name}"), json!({ "post": op }));
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "API", "version": "1" },
        "paths": paths,
        "components": {
            "schemas": { "Error": error_schema() },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}

pub(crate) async fn route(State(app): State<Arc<App>>, req: Request) -> Response {
    let info = req.extensions().get::<ConnInfo>().cloned();
    let identity = info
        .as_ref()
        .and_then(|info| app.identity(bearer(req.headers()).as_deref(), info));
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match app.admit(app.config.openapi, identity.as_ref()) {
        Some(service) if get && info.is_some() => {
            axum::Json(document(service, identity.as_ref())).into_response()
        }
        _ => app.decoy.respond(req).await,
    }
}
