//! Protobuf messages as grpc-gateway writes and reads them: protojson with
//! lowerCamelCase names, 64-bit integers as strings, enums by name, every field
//! written (an unset message as `null`); requests accept either field spelling,
//! ignore unknown fields, and take path and query values as text.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};

/// A request message from a JSON body; an empty body is the empty message.
pub fn from_body(desc: MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(desc));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let message = DynamicMessage::deserialize_with_options(
        desc,
        &mut de,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(message)
}

/// A field found by its proto name (`node_id`) or its JSON name (`nodeId`).
pub fn field(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))
}

/// Sets `field` from the text of a path segment or query value; a repeated
/// field gains one element per call.
pub fn set_text(
    message: &mut DynamicMessage,
    field: &FieldDescriptor,
    text: &str,
) -> Result<(), String> {
    let value = scalar(field, text)
        .map_err(|why| format!("type mismatch, parameter: {}, error: {why}", field.name()))?;
    if field.is_list() {
        if let Value::List(list) = message.get_field_mut(field) {
            list.push(value);
        }
    } else {
        message.set_field(field, value);
    }
    Ok(())
}

fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let number = |what: &str| format!("{text:?} is not {what}");
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => Value::Bool(match text {
            "true" | "True" | "TRUE" | "t" | "T" | "1" => true,
            "false" | "False" | "FALSE" | "f" | "F" | "0" => false,
            _ => return Err(number("true or false")),
        }),
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(text.parse().map_err(|_| number("an unsigned integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(
            text.parse()
                .map_err(|_| number("an unsigned 32-bit integer"))?,
        ),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(text.parse().map_err(|_| number("an integer"))?)
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(text.parse().map_err(|_| number("a 32-bit integer"))?)
        }
        Kind::Double => Value::F64(text.parse().map_err(|_| number("a number"))?),
        Kind::Float => Value::F32(text.parse().map_err(|_| number("a number"))?),
        Kind::Bytes => {
            use base64::Engine;
            let engine = base64::engine::general_purpose::STANDARD;
            Value::Bytes(engine.decode(text).map_err(|_| number("base64"))?.into())
        }
        Kind::Enum(e) => {
            let value = e
                .get_value_by_name(text)
                .map(|v| v.number())
                .or_else(|| text.parse().ok())
                .ok_or_else(|| number(&format!("a value of {}", e.name())))?;
            Value::EnumNumber(value)
        }
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            let at = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|_| number("an RFC 3339 time"))?;
            let mut stamp = DynamicMessage::new(m);
            stamp.set_field_by_name("seconds", Value::I64(at.timestamp()));
            stamp.set_field_by_name(
                "nanos",
                Value::I32(i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0)),
            );
            Value::Message(stamp)
        }
        Kind::Message(m) => return Err(format!("{} cannot be given as text", m.name())),
    })
}

/// A response message as grpc-gateway's default marshaller writes it.
pub fn to_json(message: &DynamicMessage) -> serde_json::Value {
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(true)
        .use_proto_field_name(false)
        .use_enum_numbers(false);
    let mut json = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        // Serialising into a `Value` fails only for out-of-range timestamps, which
        // headway never stores; say so rather than answer with half a message.
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
    write_unset(&mut json, &message.descriptor());
    json
}

/// Adds `null` for every unset message field, as protojson does with
/// `EmitUnpopulated`; prost-reflect leaves them out.
fn write_unset(json: &mut serde_json::Value, desc: &MessageDescriptor) {
    let Some(object) = json.as_object_mut() else {
        return;
    };
    for field in desc.fields() {
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        // Lists and maps are always written (empty when unset); well-known types
        // have their own JSON forms.
        let well_known = inner.full_name().starts_with("google.protobuf.");
        match object.get_mut(field.json_name()) {
            None if !field.is_list() && !field.is_map() => {
                object.insert(field.json_name().to_owned(), serde_json::Value::Null);
            }
            Some(serde_json::Value::Array(items)) if !well_known => {
                for item in items {
                    write_unset(item, &inner);
                }
            }
            Some(value) if !well_known && !field.is_map() => write_unset(value, &inner),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::schema::pool;

    fn message(name: &str) -> MessageDescriptor {
        pool()
            .get_message_by_name(&format!("headscale.v1.{name}"))
            .unwrap()
    }

    #[test]
    fn responses_are_written_as_grpc_gateway_writes_them() {
        let mut key = DynamicMessage::new(message("ApiKey"));
        key.set_field_by_name("id", Value::U64(7));
        key.set_field_by_name("prefix", Value::String("hskey-api-abc".into()));
        let json = to_json(&key);
        assert_eq!(json["id"], "7", "64-bit integers are strings: {json}");
        assert_eq!(json["prefix"], "hskey-api-abc");
        assert_eq!(json["lastSeen"], serde_json::Value::Null, "{json}");
        assert_eq!(json["createdAt"], serde_json::Value::Null, "{json}");

        let mut node = DynamicMessage::new(message("Node"));
        node.set_field_by_name("register_method", Value::EnumNumber(2));
        let json = to_json(&node);
        assert_eq!(json["registerMethod"], "REGISTER_METHOD_CLI");
        assert_eq!(json["ipAddresses"], serde_json::json!([]));
        assert_eq!(json["user"], serde_json::Value::Null);
        assert_eq!(json["givenName"], "");
        assert_eq!(json["online"], false);
    }

    #[test]
    fn requests_take_either_spelling_and_ignore_unknown_fields() {
        let desc = message("CreateUserRequest");
        let a = from_body(desc.clone(), br#"{"name":"a","displayName":"A","x":1}"#).unwrap();
        let b = from_body(desc.clone(), br#"{"name":"a","display_name":"A"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            from_body(desc.clone(), b" \n").unwrap(),
            DynamicMessage::new(desc.clone())
        );
        assert!(from_body(desc.clone(), b"{bad").is_err());
        assert!(from_body(desc, br#"{"name":"a"} trailing"#).is_err());
    }

    #[test]
    fn text_values_are_parsed_by_field_type() {
        let desc = message("ExpireNodeRequest");
        let mut m = DynamicMessage::new(desc.clone());
        set_text(&mut m, &field(&desc, "nodeId").unwrap(), "12").unwrap();
        set_text(
            &mut m,
            &field(&desc, "expiry").unwrap(),
            "2030-01-02T03:04:05.5Z",
        )
        .unwrap();
        set_text(&mut m, &field(&desc, "disable_expiry").unwrap(), "true").unwrap();
        let json = to_json(&m);
        assert_eq!(json["nodeId"], "12");
        assert_eq!(json["expiry"], "2030-01-02T03:04:05.500Z");
        assert_eq!(json["disableExpiry"], true);
        let err = set_text(&mut m, &field(&desc, "node_id").unwrap(), "abc").unwrap_err();
        assert!(
            err.starts_with("type mismatch, parameter: node_id"),
            "{err}"
        );

        let desc = message("SetTagsRequest");
        let mut m = DynamicMessage::new(desc.clone());
        let tags = field(&desc, "tags").unwrap();
        set_text(&mut m, &tags, "tag:a").unwrap();
        set_text(&mut m, &tags, "tag:b").unwrap();
        assert_eq!(to_json(&m)["tags"], serde_json::json!(["tag:a", "tag:b"]));
    }
}
