//! The extra DNS records file (`dns.extra_records_path`): a JSON list of
//! `{"name", "type", "value"}` objects, as Headscale reads it, read at start-up
//! and again whenever it changes.

use super::ExtraRecord;
use std::net::IpAddr;
use std::path::Path;

/// A records file larger than this is refused.
pub const MAX_RECORDS_BYTES: u64 = 4 << 20;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRecord {
    name: String,
    #[serde(rename = "type")]
    record_type: String,
    value: String,
}

/// Reads and checks the records file; the error names the file and, for a bad
/// record, which one and why.
pub fn read_extra_records(path: &Path) -> Result<Vec<ExtraRecord>, String> {
    let at = |what: String| format!("{}: {what}", path.display());
    let size = std::fs::metadata(path)
        .map_err(|e| at(e.to_string()))?
        .len();
    if size > MAX_RECORDS_BYTES {
        return Err(at(format!(
            "{size} bytes is more than the {MAX_RECORDS_BYTES} a records file may have"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    parse_extra_records(&text).map_err(at)
}

/// The records of a records file's text.
pub fn parse_extra_records(text: &str) -> Result<Vec<ExtraRecord>, String> {
    let records: Vec<FileRecord> = serde_json::from_str(text).map_err(|e| {
        format!(
            "{e} (expected a JSON list like [{{\"name\": \"grafana.example\", \"type\": \"A\", \"value\": \"100.64.0.3\"}}])"
        )
    })?;
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let record = ExtraRecord {
                name: r.name.trim().to_owned(),
                record_type: r.record_type.trim().to_ascii_uppercase(),
                value: r.value.trim().to_owned(),
            };
            check_record(&record).map_err(|why| format!("record {i}: {why}"))?;
            Ok(record)
        })
        .collect()
}

/// What a record needs before clients may be sent it: a name, and an address
/// of its type.
pub(super) fn check_record(record: &ExtraRecord) -> Result<(), String> {
    if record.name.is_empty() {
        return Err("needs a name".into());
    }
    let address = record.value.parse::<IpAddr>();
    match (record.record_type.as_str(), address) {
        ("A", Ok(IpAddr::V4(_))) | ("AAAA", Ok(IpAddr::V6(_))) => Ok(()),
        ("A", _) => Err(format!(
            "{}: {:?} is not an IPv4 address (an A record needs one, e.g. 100.64.0.3)",
            record.name, record.value
        )),
        ("AAAA", _) => Err(format!(
            "{}: {:?} is not an IPv6 address (an AAAA record needs one, e.g. fd7a:115c:a1e0::3)",
            record.name, record.value
        )),
        (other, _) => Err(format!(
            "{}: type {other:?} is not supported (Tailscale clients use A and AAAA records)",
            record.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_file_is_checked_record_by_record() {
        let records = parse_extra_records(
            r#"[{"name": "grafana.ts.example", "type": "a", "value": "100.64.0.3"},
                {"name": "v6.ts.example", "type": "AAAA", "value": "fd7a:115c:a1e0::3"}]"#,
        )
        .unwrap();
        assert_eq!(records[0].record_type, "A");
        assert_eq!(records[1].value, "fd7a:115c:a1e0::3");
        assert_eq!(parse_extra_records("[]").unwrap(), []);

        let refusal = |text: &str| parse_extra_records(text).unwrap_err();
        assert!(
            refusal(r#"[{"name": "x.example", "type": "A", "value": "100.64.0.300"}]"#)
                .contains("record 0: x.example: \"100.64.0.300\" is not an IPv4 address"),
        );
        assert!(
            refusal(r#"[{"name": "x", "type": "AAAA", "value": "100.64.0.3"}]"#)
                .contains("not an IPv6 address")
        );
        assert!(refusal(r#"[{"name": "x", "type": "MX", "value": "1.2.3.4"}]"#).contains("MX"));
        assert!(refusal(r#"{"name": "x"}"#).contains("expected a JSON list"));
        assert!(refusal(r#"[{"name": "x", "typo": "A", "value": "1.2.3.4"}]"#).contains("typo"));
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let err = read_extra_records(Path::new("/nonexistent/records.json")).unwrap_err();
        assert!(err.starts_with("/nonexistent/records.json: "), "{err}");
    }
}
