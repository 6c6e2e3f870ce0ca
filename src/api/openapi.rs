//! The OpenAPI 3.1 document of `/api/v1` (`/api/v1/openapi.json`, `.yaml`) and a
//! readable page of it (`/api/v1/docs`), both generated from the same
//! descriptors and HTTP rules the routes are built from, so they cannot drift.

use super::schema::{self, Body, Operation};
use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::get;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// The two documentation routes; public, as in Headscale (every operation
/// they describe still needs a key).
pub fn router() -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(document_json))
        .route("/api/v1/openapi.yaml", get(document_yaml))
        .route("/api/v1/docs", get(docs_page))
        // Headscale 0.29 served its API page at /swagger; bookmarks land here.
        .route(
            "/swagger",
            get(|| async { Redirect::permanent("/api/v1/docs") }),
        )
}

/// The same document as YAML, where Headscale's next release publishes its own.
async fn document_yaml() -> impl IntoResponse {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| {
        yaml_serde::to_string(&document()).unwrap_or_else(|e| format!("error: {e}\n"))
    });
    ([(header::CONTENT_TYPE, "application/yaml")], text.as_str())
}

async fn document_json() -> impl IntoResponse {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| {
        serde_json::to_string_pretty(&document())
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], text.as_str())
}

async fn docs_page() -> Html<&'static str> {
    static PAGE: OnceLock<String> = OnceLock::new();
    Html(PAGE.get_or_init(page).as_str())
}

/// The operation id: the RPC's name in lowerCamelCase (`createUser`).
pub fn operation_id(op: &Operation) -> String {
    let name = op.rpc.name();
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// The component name of a message or enum: `v1User`, as protoc-gen-openapiv2
/// named Headscale's.
fn component(full_name: &str) -> String {
    let name = full_name.rsplit('.').next().unwrap_or(full_name);
    format!("v1{name}")
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut needed = BTreeSet::new();
    for op in schema::operations() {
        let entry = paths
            .entry(op.path.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method.as_str().to_ascii_lowercase()] = operation(op, &mut needed);
    }
    let mut schemas = Map::new();
    schemas.insert(
        "rpcStatus".into(),
        json!({
            "type": "object",
            "description": "An error: the gRPC status code, its message, and details (always empty).",
            "properties": {
                "code": {"type": "integer", "format": "int32"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}}
            }
        }),
    );
    let pool = schema::pool();
    let mut done = BTreeSet::new();
    while let Some(name) = needed.pop_first() {
        if !done.insert(name.clone()) {
            continue;
        }
        if let Some(message) = pool.get_message_by_name(&name) {
            let value = object(&message, &[], &mut needed);
            schemas.insert(component(&name), value);
        } else if let Some(e) = pool.get_enum_by_name(&name) {
            let values: Vec<_> = e.values().map(|v| v.name().to_owned()).collect();
            schemas.insert(
                component(&name),
                json!({"type": "string", "enum": values, "default": values.first()}),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "headway /api/v1",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Headscale's REST API (the grpc-gateway form of headscale.v1, as in Headscale v0.29.2), served by headway. Every operation needs `Authorization: Bearer <api key>` (`headway apikeys create`).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    })
}

fn operation(op: &Operation, needed: &mut BTreeSet<String>) -> Value {
    let input = op.input();
    let mut parameters = Vec::new();
    for name in &op.path_fields {
        if let Some(field) = input.get_field_by_name(name) {
            parameters.push(json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": field_schema(&field, needed),
            }));
        }
    }
    for field in op.query_fields() {
        let mut schema = field_schema(&field, needed);
        if field.is_list() {
            schema["description"] = json!("repeat the parameter for each value");
        }
        parameters.push(json!({
            "name": field.json_name(),
            "in": "query",
            "required": false,
            "schema": schema,
        }));
    }
    let mut value = json!({
        "operationId": operation_id(op),
        "summary": op.summary(),
        "tags": [tag(op)],
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "A successful response.",
                "content": {"application/json": {"schema": {"$ref": reference(op.output().full_name(), needed)}}},
            },
            "401": {
                "description": "No current API key: the body is `Unauthorized`.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            "default": {
                "description": "An error, with the HTTP status grpc-gateway maps its gRPC code to.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/rpcStatus"}}},
            },
        },
    });
    if op.body == Body::Whole {
        let schema = if op.path_fields.is_empty() {
            json!({"$ref": reference(input.full_name(), needed)})
        } else {
            object(&input, &op.path_fields, needed)
        };
        value["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema}},
        });
    }
    value
}

/// Groups operations by the noun of their path (`user`, `node`, `apikey`…).
fn tag(op: &Operation) -> String {
    op.path
        .trim_start_matches("/api/v1/")
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned()
}

fn reference(full_name: &str, needed: &mut BTreeSet<String>) -> String {
    needed.insert(full_name.to_owned());
    format!("#/components/schemas/{}", component(full_name))
}

/// A message's object schema, leaving out `skip` (fields the path binds).
fn object(message: &MessageDescriptor, skip: &[String], needed: &mut BTreeSet<String>) -> Value {
    let mut properties = Map::new();
    for field in message.fields() {
        if skip.iter().any(|s| s == field.name()) {
            continue;
        }
        let mut schema = field_schema(&field, needed);
        let description = schema::comment(&field.parent_file(), field.path());
        if !description.is_empty() && schema.get("$ref").is_none() {
            schema["description"] = json!(description);
        }
        properties.insert(field.json_name().to_owned(), schema);
    }
    let mut value = json!({"type": "object", "properties": properties});
    let description = schema::comment(&message.parent_file(), message.path());
    if !description.is_empty() {
        value["description"] = json!(description);
    }
    value
}

fn field_schema(field: &FieldDescriptor, needed: &mut BTreeSet<String>) -> Value {
    let one = match field.kind() {
        Kind::String => json!({"type": "string"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Double => json!({"type": "number", "format": "double"}),
        Kind::Float => json!({"type": "number", "format": "float"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(e) => json!({"$ref": reference(e.full_name(), needed)}),
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            json!({"type": ["string", "null"], "format": "date-time"})
        }
        Kind::Message(m) => json!({"$ref": reference(m.full_name(), needed)}),
    };
    if field.is_list() {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

/// The readable page: every operation with its parameters and body fields.
fn page() -> String {
    let mut html = String::from(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>headway /api/v1</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.4}",
        "code,pre{font-family:ui-monospace,monospace}section{border-top:1px solid #ccc;padding:.5rem 0}",
        ".m{display:inline-block;min-width:4.5rem;font-weight:bold}table{border-collapse:collapse}",
        "td{padding:.1rem .6rem .1rem 0;vertical-align:top}</style></head><body>",
        "<h1>headway <code>/api/v1</code></h1>",
        "<p>Headscale's REST API. Send <code>Authorization: Bearer &lt;api key&gt;</code> ",
        "(create one with <code>headway apikeys create</code>). Bodies and answers are JSON; ",
        "64-bit numbers are strings; errors are <code>{\"code\",\"message\",\"details\"}</code>. ",
        "The machine-readable form is <a href=\"/api/v1/openapi.json\">openapi.json</a>.</p>",
    ));
    for op in schema::operations() {
        html.push_str(&format!(
            "<section id=\"{id}\"><h2><span class=\"m\">{method}</span> <code>{path}</code></h2><p>{summary} <small>(<code>{id}</code>)</small></p>",
            id = operation_id(op),
            method = op.method,
            path = escape(&op.path),
            summary = escape(&op.summary()),
        ));
        let input = op.input();
        let rows: Vec<(String, FieldDescriptor)> = match op.body {
            Body::Whole => input
                .fields()
                .filter(|f| !op.path_fields.iter().any(|p| p == f.name()))
                .map(|f| ("body".to_owned(), f))
                .collect(),
            Body::None => op
                .query_fields()
                .into_iter()
                .map(|f| ("query".to_owned(), f))
                .collect(),
        };
        if !rows.is_empty() {
            html.push_str("<table>");
            for (place, field) in rows {
                html.push_str(&format!(
                    "<tr><td>{place}</td><td><code>{}</code></td><td>{}</td></tr>",
                    field.json_name(),
                    escape(&type_name(&field)),
                ));
            }
            html.push_str("</table>");
        }
        html.push_str(&format!(
            "<p>Answers <code>{}</code>.</p></section>",
            op.output().name()
        ));
    }
    html.push_str("</body></html>");
    html
}

fn type_name(field: &FieldDescriptor) -> String {
    let one = match field.kind() {
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            "time (RFC 3339)".to_owned()
        }
        Kind::Message(m) => m.name().to_owned(),
        Kind::Enum(e) => e.name().to_owned(),
        Kind::Uint64 | Kind::Int64 => "integer (as a string)".to_owned(),
        kind => format!("{kind:?}").to_ascii_lowercase(),
    };
    if field.is_list() {
        format!("list of {one}")
    } else {
        one
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_operation_and_every_schema_it_names() {
        let doc = document();
        let text = doc.to_string();
        for op in schema::operations() {
            let method = op.method.as_str().to_ascii_lowercase();
            let entry = &doc["paths"][&op.path][&method];
            assert_eq!(
                entry["operationId"],
                operation_id(op),
                "{} {}",
                op.method,
                op.path
            );
        }
        // Every $ref resolves.
        for piece in text.split("\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
        }
        let node = &doc["components"]["schemas"]["v1Node"]["properties"];
        assert_eq!(node["id"]["type"], "string");
        assert_eq!(node["ipAddresses"]["type"], "array");
        assert_eq!(
            node["registerMethod"]["$ref"],
            "#/components/schemas/v1RegisterMethod"
        );
        let rename = &doc["paths"]["/api/v1/node/{node_id}/rename/{new_name}"]["post"];
        assert_eq!(rename["parameters"].as_array().unwrap().len(), 2);
        assert!(rename.get("requestBody").is_none());
    }
}
