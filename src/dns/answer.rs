//! One DNS query in, one response out: the zone's records, negative answers,
//! errors, EDNS and truncation. Pure: no IO, the time is passed in.

use std::time::Instant;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::{Transport, Zone};

const HEADER_LEN: usize = 12;
/// The largest UDP response to a client without EDNS (RFC 1035).
const UDP_PLAIN_MAX: usize = 512;
/// The largest UDP response with EDNS, whatever the client offers: DNS Flag Day
/// 2020's size, which avoids IP fragmentation.
const UDP_EDNS_MAX: u16 = 1232;
/// TCP could carry 64 KiB; no answer of ours comes near this.
const TCP_MAX: usize = 16 * 1024;
/// Challenge values change between orders, so resolvers must not keep them long.
const TXT_TTL: u32 = 60;
/// The SOA and NS records change only with the configuration.
const ZONE_TTL: u32 = 3600;
/// No zone transfers, so the serial only has to be valid.
const SOA_SERIAL: u32 = 1;
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86400;
/// How long resolvers cache a negative answer (RFC 2308), short so that a lookup
/// made just before a challenge is published does not hide it for long.
const SOA_MINIMUM: u32 = 60;

/// The response to `query` as bytes, or `None` when it is too short to hold a
/// header (nothing to address a reply to) or is itself a response.
pub fn answer(zone: &Zone, query: &[u8], transport: Transport, now: Instant) -> Option<Vec<u8>> {
    let header = query.get(..HEADER_LEN)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    // A response is never answered: two servers could bounce replies forever.
    if header[2] & 0x80 != 0 {
        return None;
    }
    let op_code = OpCode::from_u8((header[2] >> 3) & 0x0f);
    let recursion_desired = header[2] & 0x01 != 0;
    let question_count = u16::from_be_bytes([header[4], header[5]]);
    let error = |code| {
        let mut response = Message::error_msg(id, op_code, code);
        response.metadata.recursion_desired = recursion_desired;
        response
    };

    // The header is judged before the message is parsed: other opcodes (UPDATE)
    // lay out their sections differently, and the parser reserves room for as
    // many questions as the header claims.
    let (response, client_payload) = if question_count != 1 {
        (error(ResponseCode::FormErr), None)
    } else if op_code != OpCode::Query {
        (error(ResponseCode::NotImp), None)
    } else {
        match Message::from_vec(query) {
            Ok(request) => (
                respond(zone, &request, now),
                request.edns.as_ref().map(Edns::max_payload),
            ),
            Err(err) => {
                tracing::debug!(%err, "DNS query does not parse");
                (error(ResponseCode::FormErr), None)
            }
        }
    };

    let limit = match (transport, client_payload) {
        (Transport::Udp, None) => UDP_PLAIN_MAX,
        // RFC 6891: sizes below 512 mean 512.
        (Transport::Udp, Some(size)) => usize::from(size.clamp(512, UDP_EDNS_MAX)),
        (Transport::Tcp, _) => TCP_MAX,
    };
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Some(bytes),
        // Too big: the header, question and OPT with TC set, so the client asks
        // again over TCP.
        Ok(_) => response.truncate().to_vec().ok(),
        Err(err) => {
            tracing::debug!(%err, "DNS response does not encode");
            error(ResponseCode::ServFail).to_vec().ok()
        }
    }
}

/// The response to a parsed query message.
fn respond(zone: &Zone, request: &Message, now: Instant) -> Message {
    let mut response = Message::response(request.id, request.op_code);
    response.metadata.recursion_desired = request.recursion_desired;
    if let Some(theirs) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(UDP_EDNS_MAX);
        response.set_edns(ours);
        if theirs.version() > 0 {
            response.metadata.response_code = ResponseCode::BADVERS;
            return response;
        }
    }
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    response.add_query(query.clone());
    if let Err(code) = lookup(zone, query, &mut response, now) {
        response.metadata.response_code = code;
    }
    response
}

/// Fills the answer and authority sections for `query`, or says why not.
fn lookup(
    zone: &Zone,
    query: &Query,
    response: &mut Message,
    now: Instant,
) -> Result<(), ResponseCode> {
    let name = query.name();
    // A misconfigured zone answers nothing rather than claiming the root.
    let apex = zone_name(&zone.apex).ok_or(ResponseCode::ServFail)?;
    let nameserver = zone_name(&zone.nameserver).ok_or(ResponseCode::ServFail)?;
    if query.query_class() != DNSClass::IN || !apex.zone_of(name) {
        return Err(ResponseCode::Refused);
    }
    response.metadata.authoritative = true;
    let query_type = query.query_type();
    if matches!(query_type, RecordType::AXFR | RecordType::IXFR) {
        return Err(ResponseCode::Refused);
    }

    // `zone_of` holds, so the same number of labels means the same name.
    let is_apex = name.num_labels() == apex.num_labels();
    let key = lookup_key(name);
    let values = key
        .as_deref()
        .map(|key| zone.challenges.txt(key, now))
        .unwrap_or_default();
    let exists = is_apex
        || !values.is_empty()
        || key
            .as_deref()
            .is_some_and(|key| zone.challenges.has_names_below(key, now));

    // Answers carry the question's own spelling of the name.
    let mut records = Vec::new();
    if is_apex {
        records.push(soa(name.clone(), &nameserver, &apex));
        records.push(Record::from_rdata(
            name.clone(),
            ZONE_TTL,
            RData::NS(NS(nameserver.clone())),
        ));
    }
    // One record per value: a single TXT record with several strings would be
    // read as their concatenation.
    records.extend(
        values.into_iter().map(|value| {
            Record::from_rdata(name.clone(), TXT_TTL, RData::TXT(TXT::new(vec![value])))
        }),
    );
    records.retain(|r| query_type == RecordType::ANY || r.record_type() == query_type);

    if records.is_empty() {
        // NODATA or NXDOMAIN: the SOA tells resolvers how long to remember it.
        response.add_authority(soa(apex.clone(), &nameserver, &apex));
        if !exists {
            response.metadata.response_code = ResponseCode::NXDomain;
        }
    } else {
        response.add_answers(records);
    }
    Ok(())
}

/// The zone's SOA record under `owner`; its contact is `hostmaster.<apex>`.
fn soa(owner: Name, nameserver: &Name, apex: &Name) -> Record {
    // Only a 255-byte apex leaves no room for the label; then the apex stands in.
    let hostmaster = apex
        .prepend_label("hostmaster")
        .unwrap_or_else(|_| apex.clone());
    Record::from_rdata(
        owner,
        ZONE_TTL,
        RData::SOA(SOA::new(
            nameserver.clone(),
            hostmaster,
            SOA_SERIAL,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            SOA_MINIMUM,
        )),
    )
}

/// A configured name (`ts.example.com`, trailing dot optional) as a fully-qualified
/// name; `None` when it does not parse or is the root.
fn zone_name(text: &str) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    (!name.is_root()).then_some(name)
}

/// The name as [`Challenges`](super::Challenges) keys it: lower case, dot-separated,
/// no trailing dot. `None` for labels no published name can have (a dot inside a
/// label, bytes outside printable ASCII).
fn lookup_key(name: &Name) -> Option<String> {
    let labels: Option<Vec<String>> = name
        .iter()
        .map(|label| {
            let fits = label.iter().all(|b| b.is_ascii_graphic() && *b != b'.');
            fits.then(|| String::from_utf8_lossy(label).to_ascii_lowercase())
        })
        .collect();
    Some(labels?.join("."))
}
