//! The REST operations of `headscale.v1`, read once from the compiled descriptors:
//! each RPC's `google.api.http` rule (method, path template, body) beside its
//! request and response message descriptors.

use axum::http;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, Value};
use std::sync::OnceLock;

/// The encoded descriptor set `build.rs` wrote: every file of `headscale.v1`
/// with its imports, options and comments.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/headscale_v1.descriptors"));

/// The gRPC service whose methods the REST API exposes.
pub const SERVICE: &str = "headscale.v1.HeadscaleService";

/// Where a request's fields come from besides the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `body: "*"`: a JSON object holds every field the path does not bind.
    Whole,
    /// No body: the query string holds them.
    None,
}

/// One REST operation: an RPC as grpc-gateway serves it.
#[derive(Clone, Debug)]
pub struct Operation {
    pub rpc: MethodDescriptor,
    pub method: http::Method,
    /// The path template, `{field}` for each path parameter (axum's syntax too).
    pub path: String,
    /// The request fields the path binds, in order.
    pub path_fields: Vec<String>,
    pub body: Body,
}

impl Operation {
    /// The gRPC path this operation calls: `/headscale.v1.HeadscaleService/<Name>`.
    pub fn grpc_path(&self) -> String {
        format!("/{SERVICE}/{}", self.rpc.name())
    }

    pub fn input(&self) -> MessageDescriptor {
        self.rpc.input()
    }

    pub fn output(&self) -> MessageDescriptor {
        self.rpc.output()
    }

    /// The request fields that come from the query string: none with a body,
    /// else every field the path does not bind.
    pub fn query_fields(&self) -> Vec<prost_reflect::FieldDescriptor> {
        if self.body == Body::Whole {
            return Vec::new();
        }
        self.input()
            .fields()
            .filter(|f| !self.path_fields.iter().any(|p| p == f.name()))
            .collect()
    }

    /// The RPC's leading comment in the proto file, if it has one.
    pub fn summary(&self) -> String {
        comment(&self.rpc.parent_file(), self.rpc.path())
    }
}

/// The descriptor pool, decoded on first use.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // Written by build.rs from the proto files this binary was built from.
        DescriptorPool::decode(DESCRIPTORS).expect("build.rs writes a valid descriptor set")
    })
}

/// Every RPC that has an HTTP rule, in the service's order.
pub fn operations() -> &'static [Operation] {
    static OPERATIONS: OnceLock<Vec<Operation>> = OnceLock::new();
    OPERATIONS.get_or_init(|| {
        let pool = pool();
        let service = pool
            .get_service_by_name(SERVICE)
            .expect("the descriptor set holds headscale.v1");
        let http = pool
            .get_extension_by_name("google.api.http")
            .expect("google/api/http.proto is imported");
        service
            .methods()
            .filter_map(|rpc| {
                let options = rpc.options();
                if !options.has_extension(&http) {
                    return None;
                }
                let rule = options.get_extension(&http);
                let rule = rule.as_message()?;
                operation(rpc.clone(), rule)
            })
            .collect()
    })
}

fn operation(rpc: MethodDescriptor, rule: &DynamicMessage) -> Option<Operation> {
    let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let (method, path) = [
        (http::Method::GET, "get"),
        (http::Method::PUT, "put"),
        (http::Method::POST, "post"),
        (http::Method::DELETE, "delete"),
        (http::Method::PATCH, "patch"),
    ]
    .into_iter()
    .find_map(|(method, field)| text(field).map(|path| (method, path)))?;
    let path_fields = path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect();
    let body = match text("body").as_deref() {
        Some("*") => Body::Whole,
        _ => Body::None,
    };
    Some(Operation {
        rpc,
        method,
        path,
        path_fields,
        body,
    })
}

/// The leading comment recorded for the element at `path` (source info).
pub fn comment(file: &prost_reflect::FileDescriptor, path: &[i32]) -> String {
    file.file_descriptor_proto()
        .source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|l| l.leading_comments.as_deref())
        .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_but_none_has_a_rest_form() {
        let service = pool().get_service_by_name(SERVICE).unwrap();
        let ops = operations();
        assert_eq!(ops.len(), service.methods().len());
        let create = ops.iter().find(|o| o.rpc.name() == "CreateUser").unwrap();
        assert_eq!(
            (&create.method, create.path.as_str(), create.body),
            (&http::Method::POST, "/api/v1/user", Body::Whole)
        );
        let rename = ops.iter().find(|o| o.rpc.name() == "RenameNode").unwrap();
        assert_eq!(rename.path_fields, ["node_id", "new_name"]);
        assert_eq!(rename.body, Body::None);
        assert!(rename.query_fields().is_empty());
        let expire = ops.iter().find(|o| o.rpc.name() == "ExpireNode").unwrap();
        let query: Vec<_> = expire
            .query_fields()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(query, ["expiry", "disable_expiry"]);
    }

    #[test]
    fn every_path_field_exists_in_its_request() {
        for op in operations() {
            for field in &op.path_fields {
                assert!(
                    op.input().get_field_by_name(field).is_some(),
                    "{}: {field}",
                    op.rpc.name()
                );
            }
        }
    }
}
