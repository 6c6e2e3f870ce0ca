//! serde helpers for Go's JSON conventions: zero times, `null` lists, prefix order.
//!
//! Go writes a `time.Time` that was never set as `0001-01-01T00:00:00Z` and a nil
//! slice as `null`; headway reads both as "nothing". Times are written as RFC 3339
//! in UTC with a `Z`, which is what Go's decoder and every client expect.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serializer};
use std::net::SocketAddr;

/// The RFC 3339 text Tailscale clients read: UTC, `Z`, fractional seconds only when set.
pub fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Go's zero `time.Time` (and anything before year 2, which Go clients never mean).
fn is_go_zero(time: &DateTime<Utc>) -> bool {
    time.year() <= 1
}

/// A required timestamp (`Created`), written as RFC 3339 with `Z`.
pub mod time {
    use super::*;

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(time))
    }
}

/// An optional timestamp: absent, `null` and Go's zero time all read as `None`;
/// `None` should be skipped when writing (`skip_serializing_if = "Option::is_none"`).
pub mod opt_time {
    use super::*;

    pub fn serialize<S: Serializer>(time: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => s.serialize_str(&format_time(time)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let time = DateTime::parse_from_rfc3339(&text)
            .map_err(|err| serde::de::Error::custom(format!("time {text:?}: {err}")))?
            .with_timezone(&Utc);
        Ok((!is_go_zero(&time)).then_some(time))
    }
}

/// A field Go may send as `null` (a nil slice or map, an unset `opt.Bool`): absent and
/// `null` both read as the type's default.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Go's `netip.Prefix.Compare` order: by masked address (so IPv4 before IPv6), then
/// prefix length, then full address. Headscale sorts `AllowedIPs` this way.
pub fn sort_prefixes(prefixes: &mut [IpNet]) {
    prefixes.sort_by(|a, b| {
        let family = |p: &IpNet| matches!(p, IpNet::V6(_));
        family(a)
            .cmp(&family(b))
            .then(a.network().cmp(&b.network()))
            .then(a.prefix_len().cmp(&b.prefix_len()))
            .then(a.addr().cmp(&b.addr()))
    });
}

/// Writes a prefix list in Go's order (see [`sort_prefixes`]) whatever order it is held in.
pub mod sorted_prefixes {
    use super::*;
    use serde::Serialize;

    pub fn serialize<S: Serializer>(prefixes: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        let mut sorted = prefixes.to_vec();
        sort_prefixes(&mut sorted);
        sorted.serialize(s)
    }
}

/// Same as [`sorted_prefixes`] for an optional list (`AllowedIPs`: absent ≠ empty).
pub mod opt_sorted_prefixes {
    use super::*;

    pub fn serialize<S: Serializer>(
        prefixes: &Option<Vec<IpNet>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match prefixes {
            Some(prefixes) => sorted_prefixes::serialize(prefixes, s),
            None => s.serialize_none(),
        }
    }
}

/// A `time.Duration` on the wire: integer nanoseconds.
pub mod duration_nanos {
    use super::*;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }

    /// `null` and negative values read as zero.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let nanos = Option::<i64>::deserialize(d)?.unwrap_or_default();
        Ok(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
    }
}

/// A list of Go `netip.AddrPort`s (`1.2.3.4:41641`, `[2001:db8::1]:41641`); `null` reads
/// as empty. An IPv6 zone (`[fe80::1%eth0]:41641`) is dropped: it means nothing to peers.
pub fn addr_ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    null_as_default::<D, Vec<String>>(d)?
        .iter()
        .map(|text| parse_addr_port(text).map_err(serde::de::Error::custom))
        .collect()
}

fn parse_addr_port(text: &str) -> Result<SocketAddr, String> {
    let unzoned = match (text.find('%'), text.rfind(']')) {
        (Some(zone), Some(end)) if zone < end => format!("{}{}", &text[..zone], &text[end..]),
        _ => text.to_owned(),
    };
    unzoned
        .parse()
        .map_err(|_| format!("{text:?} is not an IP:port"))
}

/// For `skip_serializing_if`: Go's `omitempty` on numbers.
pub fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(default, with = "opt_time")]
        at: Option<DateTime<Utc>>,
        #[serde(default, deserialize_with = "null_as_default")]
        list: Vec<u8>,
    }

    #[test]
    fn go_zero_time_and_null_read_as_nothing() {
        let t: T = serde_json::from_str(r#"{"at":"0001-01-01T00:00:00Z","list":null}"#).unwrap();
        assert_eq!(t.at, None);
        assert!(t.list.is_empty());
        let t: T = serde_json::from_str(r#"{"at":null}"#).unwrap();
        assert_eq!(t.at, None);
        let t: T = serde_json::from_str("{}").unwrap();
        assert_eq!(t.at, None);
    }

    #[test]
    fn times_read_any_offset_and_write_utc_with_z() {
        let t: T = serde_json::from_str(r#"{"at":"2026-03-01T12:00:00.123456789+02:00"}"#).unwrap();
        let at = t.at.unwrap();
        assert_eq!(format_time(&at), "2026-03-01T10:00:00.123456789Z");
        let whole = DateTime::parse_from_rfc3339("1970-01-01T00:02:03Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_time(&whole), "1970-01-01T00:02:03Z");
    }

    #[test]
    fn addr_ports_accept_both_families_and_drop_zones() {
        #[derive(Deserialize)]
        struct E {
            #[serde(deserialize_with = "addr_ports")]
            e: Vec<SocketAddr>,
        }
        let e: E = serde_json::from_str(
            r#"{"e":["192.0.2.1:41641","[2001:db8::1]:41641","[fe80::1%eth0]:7"]}"#,
        )
        .unwrap();
        let text: Vec<String> = e.e.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["192.0.2.1:41641", "[2001:db8::1]:41641", "[fe80::1]:7"]
        );
        let e: E = serde_json::from_str(r#"{"e":null}"#).unwrap();
        assert!(e.e.is_empty());
        assert!(serde_json::from_str::<E>(r#"{"e":["nope"]}"#).is_err());
    }

    #[test]
    fn prefixes_sort_like_go() {
        let mut p: Vec<IpNet> = [
            "fd7a:115c:a1e0::1/128",
            "100.64.0.1/32",
            "10.0.0.0/8",
            "0.0.0.0/0",
            "::/0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        sort_prefixes(&mut p);
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "0.0.0.0/0",
                "10.0.0.0/8",
                "100.64.0.1/32",
                "::/0",
                "fd7a:115c:a1e0::1/128"
            ]
        );
        let mut p: Vec<IpNet> = ["192.168.0.0/16", "100.64.0.2/32", "100.64.0.0/10"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        sort_prefixes(&mut p);
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["100.64.0.0/10", "100.64.0.2/32", "192.168.0.0/16"]);
    }
}
