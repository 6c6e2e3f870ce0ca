//! What the CLI prints: human tables in Headscale's pterm layout, and `-o json`,
//! `json-line` and `yaml` in the shape Headscale's CLI produces.
//!
//! Headscale marshals its generated Go structs with `encoding/json`, so machine
//! output uses protobuf field names in snake_case, omits zero values (`omitempty`)
//! and writes timestamps as `{"seconds":…,"nanos":…}`. [`Value`] keeps field order
//! (the `.proto` declaration order), which `serde_json::Value` would not.
//! Knows `grpc::pb` messages and text; nothing about connections.

use crate::grpc::pb;
use chrono::{DateTime, Utc};
use comfy_table::{ContentArrangement, ContentLineStyle, Table, TableStyle};

/// The `-o/--output` choices; empty means human text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
    JsonLine,
    Yaml,
}

impl Format {
    /// Parses the flag value as Headscale spells it.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "" => Ok(Format::Human),
            "json" => Ok(Format::Json),
            "json-line" => Ok(Format::JsonLine),
            "yaml" => Ok(Format::Yaml),
            other => Err(format!(
                "unknown output format {other:?}: use json, json-line or yaml (or nothing for tables)"
            )),
        }
    }

    pub fn is_human(self) -> bool {
        self == Format::Human
    }
}

/// A JSON-like tree whose objects keep their field order.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    U64(u64),
    I64(i64),
    Str(String),
    List(Vec<Value>),
    Obj(Vec<(&'static str, Value)>),
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::U64(n) => serializer.serialize_u64(*n),
            Value::I64(n) => serializer.serialize_i64(*n),
            Value::Str(s) => serializer.serialize_str(s),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Obj(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

/// Builds an object the way Go's `encoding/json` writes a struct with `omitempty` tags.
#[derive(Default)]
pub struct Obj(Vec<(&'static str, Value)>);

impl Obj {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u64(mut self, key: &'static str, value: u64) -> Self {
        if value != 0 {
            self.0.push((key, Value::U64(value)));
        }
        self
    }

    pub fn i64(mut self, key: &'static str, value: i64) -> Self {
        if value != 0 {
            self.0.push((key, Value::I64(value)));
        }
        self
    }

    pub fn str(mut self, key: &'static str, value: &str) -> Self {
        if !value.is_empty() {
            self.0.push((key, Value::Str(value.to_owned())));
        }
        self
    }

    pub fn bool(mut self, key: &'static str, value: bool) -> Self {
        if value {
            self.0.push((key, Value::Bool(true)));
        }
        self
    }

    pub fn strs(mut self, key: &'static str, values: &[String]) -> Self {
        if !values.is_empty() {
            let items = values.iter().map(|v| Value::Str(v.clone())).collect();
            self.0.push((key, Value::List(items)));
        }
        self
    }

    /// A message field: omitted when unset (a nil pointer in Go), kept when set even if empty.
    pub fn msg(mut self, key: &'static str, value: Option<Value>) -> Self {
        if let Some(value) = value {
            self.0.push((key, value));
        }
        self
    }

    pub fn time(self, key: &'static str, value: Option<&prost_types::Timestamp>) -> Self {
        self.msg(key, value.map(timestamp))
    }

    pub fn build(self) -> Value {
        Value::Obj(self.0)
    }
}

/// `timestamppb.Timestamp` as `encoding/json` writes it.
pub fn timestamp(ts: &prost_types::Timestamp) -> Value {
    Obj::new()
        .i64("seconds", ts.seconds)
        .i64("nanos", i64::from(ts.nanos))
        .build()
}

/// A list; empty lists print as `[]` (Headscale prints `null`, which breaks `jq '.[]'`).
pub fn list<T>(items: &[T], each: impl Fn(&T) -> Value) -> Value {
    Value::List(items.iter().map(each).collect())
}

pub fn user(u: &pb::User) -> Value {
    Obj::new()
        .u64("id", u.id)
        .str("name", &u.name)
        .time("created_at", u.created_at.as_ref())
        .str("display_name", &u.display_name)
        .str("email", &u.email)
        .str("provider_id", &u.provider_id)
        .str("provider", &u.provider)
        .str("profile_pic_url", &u.profile_pic_url)
        .build()
}

pub fn preauth_key(k: &pb::PreAuthKey) -> Value {
    Obj::new()
        .msg("user", k.user.as_ref().map(user))
        .u64("id", k.id)
        .str("key", &k.key)
        .bool("reusable", k.reusable)
        .bool("ephemeral", k.ephemeral)
        .bool("used", k.used)
        .time("expiration", k.expiration.as_ref())
        .time("created_at", k.created_at.as_ref())
        .strs("acl_tags", &k.acl_tags)
        .build()
}

pub fn node(n: &pb::Node) -> Value {
    Obj::new()
        .u64("id", n.id)
        .str("machine_key", &n.machine_key)
        .str("node_key", &n.node_key)
        .str("disco_key", &n.disco_key)
        .strs("ip_addresses", &n.ip_addresses)
        .str("name", &n.name)
        .msg("user", n.user.as_ref().map(user))
        .time("last_seen", n.last_seen.as_ref())
        .time("expiry", n.expiry.as_ref())
        .msg("pre_auth_key", n.pre_auth_key.as_ref().map(preauth_key))
        .time("created_at", n.created_at.as_ref())
        .i64("register_method", i64::from(n.register_method))
        .str("given_name", &n.given_name)
        .bool("online", n.online)
        .strs("approved_routes", &n.approved_routes)
        .strs("available_routes", &n.available_routes)
        .strs("subnet_routes", &n.subnet_routes)
        .strs("tags", &n.tags)
        .build()
}

pub fn api_key(k: &pb::ApiKey) -> Value {
    Obj::new()
        .u64("id", k.id)
        .str("prefix", &k.prefix)
        .time("expiration", k.expiration.as_ref())
        .time("created_at", k.created_at.as_ref())
        .time("last_seen", k.last_seen.as_ref())
        .build()
}

pub fn route(r: &pb::Route) -> Value {
    Obj::new()
        .u64("id", r.id)
        .msg("node", r.node.as_ref().map(node))
        .str("prefix", &r.prefix)
        .bool("advertised", r.advertised)
        .bool("enabled", r.enabled)
        .bool("is_primary", r.is_primary)
        .time("created_at", r.created_at.as_ref())
        .time("updated_at", r.updated_at.as_ref())
        .time("deleted_at", r.deleted_at.as_ref())
        .build()
}

/// Machine output as text: pretty JSON indented with tabs (like Go's
/// `json.MarshalIndent(v, "", "\t")`), one-line JSON, or YAML.
pub fn machine(format: Format, value: &Value) -> String {
    match format {
        Format::Json => {
            let mut buf = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
            serde::Serialize::serialize(value, &mut ser).expect("a Value always serializes");
            String::from_utf8(buf).expect("serde_json writes UTF-8")
        }
        Format::JsonLine | Format::Human => {
            serde_json::to_string(value).expect("a Value always serializes")
        }
        Format::Yaml => yaml_serde::to_string(value)
            .expect("a Value always serializes")
            .trim_end()
            .to_owned(),
    }
}

/// What a command prints on stdout: `human` in human mode, else `value` in the asked format.
pub fn render(
    format: Format,
    value: impl FnOnce() -> Value,
    human: impl FnOnce() -> String,
) -> String {
    if format.is_human() {
        human()
    } else {
        machine(format, &value())
    }
}

/// Prints what [`render`] returns on stdout, followed by a newline.
pub fn print(format: Format, value: impl FnOnce() -> Value, human: impl FnOnce() -> String) {
    println!("{}", render(format, value, human));
}

/// Headscale's table look: columns separated by ` | `, no borders, no header rule,
/// no colours, never wrapped to the terminal width, trailing spaces trimmed.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    const STYLE: TableStyle = TableStyle::new()
        .header_lines(ContentLineStyle::none().junction('|'))
        .content_lines(ContentLineStyle::none().junction('|'));
    let mut table = Table::new();
    table
        .load_style(STYLE)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec())
        .add_rows(rows);
    if let Some(first) = table.column_mut(0) {
        first.set_padding((0, 1));
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Headscale's `2006-01-02 15:04:05`, in UTC.
pub fn time(ts: &prost_types::Timestamp) -> String {
    to_datetime(ts)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub fn to_datetime(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
}

pub fn from_datetime(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// `now + text` for `-e/--expiration` (`30m`, `24h`, `90d`, Go and Prometheus units).
pub fn expires_in(text: &str) -> anyhow::Result<prost_types::Timestamp> {
    let lifetime = chrono::TimeDelta::from_std(crate::types::duration::parse(text)?)?;
    let at = Utc::now()
        .checked_add_signed(lifetime)
        .ok_or_else(|| anyhow::anyhow!("expiration {text:?} is too far in the future"))?;
    Ok(from_datetime(at))
}

/// Tailscale's short key form, `[` + the first 5 base64 characters of the key + `]`,
/// as `tailscale status` and Headscale's node table print it; empty for no key.
pub fn short_key(text: &str) -> String {
    use base64::Engine as _;
    let hex_digits = text.split_once(':').map_or(text, |(_, rest)| rest);
    let mut bytes = [0u8; 32];
    if hex::decode_to_slice(hex_digits, &mut bytes).is_err() || bytes == [0u8; 32] {
        return String::new();
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes[..4]);
    format!("[{}]", &b64[..5])
}

pub fn users_table(users: &[pb::User]) -> String {
    let rows = users
        .iter()
        .map(|u| {
            // Headscale shows the display name here; users made on the command line
            // have none, so their name stands in (older guides show a Name column).
            let shown = if u.display_name.is_empty() {
                &u.name
            } else {
                &u.display_name
            };
            vec![
                u.id.to_string(),
                shown.clone(),
                u.name.clone(),
                u.email.clone(),
                u.created_at.as_ref().map(time).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["ID", "Name", "Username", "Email", "Created"], rows)
}

pub fn nodes_table(nodes: &[pb::Node], now: DateTime<Utc>) -> String {
    let rows = nodes
        .iter()
        .map(|n| {
            let ephemeral = n.pre_auth_key.as_ref().is_some_and(|k| k.ephemeral);
            let expired = n
                .expiry
                .as_ref()
                .and_then(to_datetime)
                .is_some_and(|t| t < now);
            vec![
                n.id.to_string(),
                n.name.clone(),
                n.given_name.clone(),
                short_key(&n.machine_key),
                short_key(&n.node_key),
                n.user.as_ref().map(|u| u.name.clone()).unwrap_or_default(),
                n.tags.join("\n"),
                n.ip_addresses.join("\n"),
                ephemeral.to_string(),
                n.last_seen.as_ref().map(time).unwrap_or_default(),
                n.expiry.as_ref().map_or_else(|| "N/A".to_owned(), time),
                if n.online { "online" } else { "offline" }.to_owned(),
                if expired { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "Hostname",
            "Name",
            "MachineKey",
            "NodeKey",
            "User",
            "Tags",
            "IP addresses",
            "Ephemeral",
            "Last seen",
            "Expiration",
            "Connected",
            "Expired",
        ],
        rows,
    )
}

pub fn node_routes_table(nodes: &[pb::Node]) -> String {
    let rows = nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.given_name.clone(),
                n.approved_routes.join("\n"),
                n.available_routes.join("\n"),
                n.subnet_routes.join("\n"),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "Hostname",
            "Approved",
            "Available",
            "Serving (Primary)",
        ],
        rows,
    )
}

pub fn preauth_keys_table(keys: &[pb::PreAuthKey]) -> String {
    let rows = keys
        .iter()
        .map(|k| {
            let owner = if !k.acl_tags.is_empty() {
                k.acl_tags.join("\n")
            } else if let Some(u) = &k.user {
                u.name.clone()
            } else {
                "-".to_owned()
            };
            vec![
                k.id.to_string(),
                k.key.clone(),
                k.reusable.to_string(),
                k.ephemeral.to_string(),
                k.used.to_string(),
                k.expiration.as_ref().map_or_else(|| "-".to_owned(), time),
                k.created_at.as_ref().map(time).unwrap_or_default(),
                owner,
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "Key/Prefix",
            "Reusable",
            "Ephemeral",
            "Used",
            "Expiration",
            "Created",
            "Owner",
        ],
        rows,
    )
}

pub fn api_keys_table(keys: &[pb::ApiKey]) -> String {
    let rows = keys
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.prefix.clone(),
                k.expiration.as_ref().map_or_else(|| "-".to_owned(), time),
                k.created_at.as_ref().map(time).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["ID", "Prefix", "Expiration", "Created"], rows)
}

/// The 0.18–0.25 route table; exit routes show `-` as primary, as Headscale did.
pub fn routes_table(routes: &[pb::Route]) -> String {
    let rows = routes
        .iter()
        .map(|r| {
            let primary = if is_exit_route(&r.prefix) {
                "-".to_owned()
            } else {
                r.is_primary.to_string()
            };
            vec![
                r.id.to_string(),
                r.node
                    .as_ref()
                    .map(|n| n.given_name.clone())
                    .unwrap_or_default(),
                r.prefix.clone(),
                r.advertised.to_string(),
                r.enabled.to_string(),
                primary,
            ]
        })
        .collect();
    table(
        &["ID", "Node", "Prefix", "Advertised", "Enabled", "Primary"],
        rows,
    )
}

fn is_exit_route(prefix: &str) -> bool {
    prefix == "0.0.0.0/0" || prefix == "::/0"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    // 2024-01-02 03:04:05 UTC
    const T0: i64 = 1_704_164_645;

    fn default_user() -> pb::User {
        pb::User {
            id: 1,
            name: "default".into(),
            created_at: ts(T0),
            ..Default::default()
        }
    }

    fn key_text(prefix: &str, first: u8) -> String {
        let mut bytes = [0u8; 32];
        bytes[0] = first;
        bytes[1] = 0x22;
        bytes[2] = 0x33;
        bytes[3] = 0x44;
        format!("{prefix}{}", hex::encode(bytes))
    }

    #[test]
    fn users_table_matches_headscale_layout() {
        let users = vec![
            default_user(),
            pb::User {
                id: 2,
                name: "alice".into(),
                display_name: "Alice A".into(),
                email: "alice@example.com".into(),
                created_at: ts(T0 + 60),
                ..Default::default()
            },
        ];
        let expected = "\
ID | Name    | Username | Email             | Created
1  | default | default  |                   | 2024-01-02 03:04:05
2  | Alice A | alice    | alice@example.com | 2024-01-02 03:05:05";
        assert_eq!(users_table(&users), expected);
    }

    #[test]
    fn empty_table_prints_its_header() {
        assert_eq!(users_table(&[]), "ID | Name | Username | Email | Created");
    }

    #[test]
    fn nodes_table_shortens_keys_and_stacks_addresses() {
        let node = pb::Node {
            id: 6,
            machine_key: key_text("mkey:", 0x11),
            node_key: key_text("nodekey:", 0xff),
            ip_addresses: vec!["100.64.0.1".into(), "fd7a:115c:a1e0::1".into()],
            name: "router".into(),
            given_name: "router-1".into(),
            user: Some(default_user()),
            last_seen: ts(T0),
            expiry: ts(T0 - 1),
            online: true,
            tags: vec!["tag:lan".into()],
            ..Default::default()
        };
        let other = pb::Node {
            id: 7,
            node_key: key_text("nodekey:", 0x00),
            name: "laptop".into(),
            given_name: "laptop".into(),
            pre_auth_key: Some(pb::PreAuthKey {
                ephemeral: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let now = DateTime::from_timestamp(T0, 0).unwrap();
        let expected = "\
ID | Hostname | Name     | MachineKey | NodeKey | User    | Tags    | IP addresses      | Ephemeral | Last seen           | Expiration          | Connected | Expired
6  | router   | router-1 | [ESIzR]    | [/yIzR] | default | tag:lan | 100.64.0.1        | false     | 2024-01-02 03:04:05 | 2024-01-02 03:04:04 | online    | yes
   |          |          |            |         |         |         | fd7a:115c:a1e0::1 |           |                     |                     |           |
7  | laptop   | laptop   |            | [ACIzR] |         |         |                   | true      |                     | N/A                 | offline   | no";
        assert_eq!(nodes_table(&[node, other], now), expected);
    }

    #[test]
    fn preauth_keys_table_shows_owner_or_tags() {
        let keys = vec![
            pb::PreAuthKey {
                user: Some(default_user()),
                id: 1,
                key: "hskey-auth-abcdefghijkl-***".into(),
                reusable: true,
                expiration: ts(T0 + 3600),
                created_at: ts(T0),
                ..Default::default()
            },
            pb::PreAuthKey {
                id: 2,
                key: "hskey-auth-mnopqrstuvwx-***".into(),
                ephemeral: true,
                used: true,
                created_at: ts(T0),
                acl_tags: vec!["tag:server".into()],
                ..Default::default()
            },
        ];
        let expected = "\
ID | Key/Prefix                  | Reusable | Ephemeral | Used  | Expiration          | Created             | Owner
1  | hskey-auth-abcdefghijkl-*** | true     | false     | false | 2024-01-02 04:04:05 | 2024-01-02 03:04:05 | default
2  | hskey-auth-mnopqrstuvwx-*** | false    | true      | true  | -                   | 2024-01-02 03:04:05 | tag:server";
        assert_eq!(preauth_keys_table(&keys), expected);
    }

    #[test]
    fn json_uses_headscale_field_names_and_omits_zero_values() {
        let json = machine(Format::JsonLine, &user(&default_user()));
        assert_eq!(
            json,
            r#"{"id":1,"name":"default","created_at":{"seconds":1704164645}}"#
        );

        let node_json = machine(
            Format::JsonLine,
            &node(&pb::Node {
                id: 3,
                given_name: "n".into(),
                register_method: pb::RegisterMethod::Cli as i32,
                approved_routes: vec!["10.0.0.0/24".into()],
                last_seen: Some(prost_types::Timestamp::default()),
                ..Default::default()
            }),
        );
        assert_eq!(
            node_json,
            r#"{"id":3,"last_seen":{},"register_method":2,"given_name":"n","approved_routes":["10.0.0.0/24"]}"#
        );
    }

    #[test]
    fn pretty_json_is_tab_indented_and_yaml_has_the_same_shape() {
        let value = list(&[default_user()], user);
        assert_eq!(
            machine(Format::Json, &value),
            "[\n\t{\n\t\t\"id\": 1,\n\t\t\"name\": \"default\",\n\t\t\"created_at\": {\n\t\t\t\"seconds\": 1704164645\n\t\t}\n\t}\n]"
        );
        assert_eq!(
            machine(Format::Yaml, &value),
            "- id: 1\n  name: default\n  created_at:\n    seconds: 1704164645"
        );
        assert_eq!(
            machine(Format::JsonLine, &list::<pb::User>(&[], user)),
            "[]"
        );
    }

    #[test]
    fn tagged_preauth_key_json_has_no_user() {
        let json = machine(
            Format::JsonLine,
            &preauth_key(&pb::PreAuthKey {
                id: 4,
                key: "hskey-auth-x-***".into(),
                acl_tags: vec!["tag:a".into()],
                ..Default::default()
            }),
        );
        assert_eq!(
            json,
            r#"{"id":4,"key":"hskey-auth-x-***","acl_tags":["tag:a"]}"#
        );
    }

    #[test]
    fn short_key_matches_tailscale() {
        // First four bytes 0x11 0x22 0x33 0x44 → base64 "ESIzRA==".
        assert_eq!(short_key(&key_text("nodekey:", 0x11)), "[ESIzR]");
        assert_eq!(short_key(&format!("nodekey:{}", "0".repeat(64))), "");
        assert_eq!(short_key("garbage"), "");
    }

    #[test]
    fn output_format_parsing() {
        assert_eq!(Format::parse(""), Ok(Format::Human));
        assert_eq!(Format::parse("json-line"), Ok(Format::JsonLine));
        assert!(Format::parse("xml").is_err());
    }
}
