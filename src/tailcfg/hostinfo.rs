//! `Hostinfo`: what a client says about itself in `POST /machine/register` and
//! `POST /machine/map`, echoed to its peers in `Node.Hostinfo`.
//!
//! Clients add fields to Hostinfo with every release and peers read some of them
//! (`Services` for peerapi ports, `sshHostKeys`, …), so the JSON is kept verbatim and
//! echoed byte for byte; the server reads only the few fields it acts on.

use super::wire::null_as_default;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::sync::Arc;

/// A client's Hostinfo: the raw JSON object plus typed access to what the server needs.
///
/// Cloning is cheap (the JSON is shared).
#[derive(Clone)]
pub struct Hostinfo {
    raw: Arc<RawValue>,
    fields: Fields,
}

/// The Hostinfo fields headway acts on; every other field is only echoed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Fields {
    #[serde(default, deserialize_with = "null_as_default")]
    hostname: String,
    #[serde(
        rename = "OS",
        alias = "Os",
        default,
        deserialize_with = "null_as_default"
    )]
    os: String,
    #[serde(
        rename = "RoutableIPs",
        alias = "RoutableIps",
        default,
        deserialize_with = "null_as_default"
    )]
    routable_ips: Vec<IpNet>,
    #[serde(default, deserialize_with = "null_as_default")]
    request_tags: Vec<String>,
    #[serde(default)]
    net_info: Option<NetInfo>,
}

/// `Hostinfo.NetInfo`: the client's latest netcheck report (only what the server uses).
///
/// Absent until the client's first netcheck has finished after a start.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetInfo {
    /// `PreferredDERP`: the DERP region the client calls home; 0 = none yet.
    #[serde(
        rename = "PreferredDERP",
        alias = "PreferredDerp",
        default,
        deserialize_with = "null_as_default"
    )]
    pub preferred_derp: u32,
    /// `LinkType`: "wired", "wifi", "mobile" or empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub link_type: String,
}

impl Hostinfo {
    /// Parses a Hostinfo JSON object (as stored, or as sent by a client).
    pub fn from_json(json: &str) -> Result<Hostinfo, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_str(json)?;
        Hostinfo::from_raw(raw)
    }

    fn from_raw(raw: Box<RawValue>) -> Result<Hostinfo, serde_json::Error> {
        let fields: Fields = serde_json::from_str(raw.get())?;
        Ok(Hostinfo {
            raw: Arc::from(raw),
            fields,
        })
    }

    /// The JSON exactly as the client sent it, to store and to echo to peers.
    pub fn as_json(&self) -> &str {
        self.raw.get()
    }

    /// `Hostname`: the machine's own name, before any sanitising.
    pub fn hostname(&self) -> &str {
        &self.fields.hostname
    }

    /// `OS`: "linux", "windows", "macOS", "iOS", "android", …
    pub fn os(&self) -> &str {
        &self.fields.os
    }

    /// `RoutableIPs`: subnet routes and exit routes (`0.0.0.0/0`, `::/0`) the node offers.
    pub fn routable_ips(&self) -> &[IpNet] {
        &self.fields.routable_ips
    }

    /// `RequestTags`: tags the node asks for (`--advertise-tags`).
    pub fn request_tags(&self) -> &[String] {
        &self.fields.request_tags
    }

    /// `NetInfo`, absent before the client's first netcheck.
    pub fn net_info(&self) -> Option<&NetInfo> {
        self.fields.net_info.as_ref()
    }

    /// The home DERP region from `NetInfo.PreferredDERP`, if the client has one.
    pub fn preferred_derp(&self) -> Option<u32> {
        self.net_info()
            .map(|n| n.preferred_derp)
            .filter(|&region| region != 0)
    }

    /// This Hostinfo, with `previous`'s `NetInfo` carried over when this one has none
    /// (protocol §5.1: requests sent before the first netcheck lack it).
    pub fn with_previous_net_info(self, previous: &Hostinfo) -> Hostinfo {
        if self.fields.net_info.is_some() || previous.fields.net_info.is_none() {
            return self;
        }
        let merged = (|| {
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(self.raw.get()).ok()?;
            let mut old: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(previous.raw.get()).ok()?;
            object.insert("NetInfo".to_owned(), old.remove("NetInfo")?);
            let raw = serde_json::value::to_raw_value(&object).ok()?;
            Some(Hostinfo {
                raw: Arc::from(raw),
                fields: Fields {
                    net_info: previous.fields.net_info.clone(),
                    ..self.fields.clone()
                },
            })
        })();
        merged.unwrap_or(self)
    }
}

impl PartialEq for Hostinfo {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get()
    }
}

impl std::fmt::Debug for Hostinfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hostinfo(")?;
        f.write_str(self.raw.get())?;
        f.write_str(")")
    }
}

impl<'de> Deserialize<'de> for Hostinfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Hostinfo::from_raw(raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Hostinfo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_fields_read_and_raw_json_echoes_unknown_fields() {
        let json = r#"{"Hostname":"laptop","OS":"linux","RoutableIPs":["192.168.1.0/24","0.0.0.0/0"],
            "RequestTags":["tag:web"],"NetInfo":{"PreferredDERP":900,"DERPLatency":{"900-v4":0.012}},
            "sshHostKeys":["ssh-ed25519 AAAA"],"SomethingNew":{"x":[1,2]}}"#;
        let hi = Hostinfo::from_json(json).unwrap();
        assert_eq!(hi.hostname(), "laptop");
        assert_eq!(hi.os(), "linux");
        assert_eq!(hi.routable_ips().len(), 2);
        assert_eq!(hi.request_tags(), ["tag:web"]);
        assert_eq!(hi.preferred_derp(), Some(900));
        assert_eq!(serde_json::to_string(&hi).unwrap(), json);
    }

    #[test]
    fn reads_from_a_json_value_too() {
        let hi: Hostinfo = serde_json::from_value(serde_json::json!({"Hostname": "v"})).unwrap();
        assert_eq!(hi.hostname(), "v");
        assert_eq!(hi.as_json(), r#"{"Hostname":"v"}"#);
    }

    #[test]
    fn nulls_read_as_empty() {
        let hi = Hostinfo::from_json(
            r#"{"Hostname":null,"RoutableIPs":null,"RequestTags":null,"NetInfo":null}"#,
        )
        .unwrap();
        assert_eq!(hi.hostname(), "");
        assert!(hi.routable_ips().is_empty());
        assert!(hi.net_info().is_none());
        assert_eq!(hi.preferred_derp(), None);
    }

    #[test]
    fn missing_net_info_keeps_the_previous_one() {
        let old =
            Hostinfo::from_json(r#"{"Hostname":"a","NetInfo":{"PreferredDERP":901}}"#).unwrap();
        let new = Hostinfo::from_json(r#"{"Hostname":"b"}"#).unwrap();
        let merged = new.with_previous_net_info(&old);
        assert_eq!(merged.hostname(), "b");
        assert_eq!(merged.preferred_derp(), Some(901));
        let value: serde_json::Value = serde_json::from_str(merged.as_json()).unwrap();
        assert_eq!(value["NetInfo"]["PreferredDERP"], 901);
        assert_eq!(value["Hostname"], "b");

        let newer =
            Hostinfo::from_json(r#"{"Hostname":"c","NetInfo":{"PreferredDERP":902}}"#).unwrap();
        assert_eq!(
            newer.with_previous_net_info(&old).preferred_derp(),
            Some(902)
        );
    }
}
