//! Tests of the DNS server: queries built and answers read with hickory-proto,
//! through [`answer`] and through real UDP and TCP sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const APEX: &str = "ts.example.com";
const CHALLENGE: &str = "_acme-challenge.node.ts.example.com";
/// The shape of an ACME DNS-01 value: 43 characters of base64url.
const VALUE: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

fn zone() -> Zone {
    Zone {
        apex: APEX.into(),
        nameserver: "headway.example.com".into(),
        challenges: Arc::new(Challenges::new()),
    }
}

fn query(name: &str, record_type: RecordType) -> Message {
    let mut message = Message::new(0x5157, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let mut name = Name::from_ascii(name).unwrap();
    name.set_fqdn(true);
    message.add_query(Query::query(name, record_type));
    message
}

fn with_edns(mut message: Message, max_payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(max_payload);
    message.set_edns(edns);
    message
}

fn ask_raw(zone: &Zone, bytes: &[u8], transport: Transport, now: Instant) -> Message {
    let response = answer(zone, bytes, transport, now).expect("a response");
    Message::from_vec(&response).expect("the response parses")
}

fn ask(zone: &Zone, message: &Message, transport: Transport, now: Instant) -> Message {
    ask_raw(zone, &message.to_vec().unwrap(), transport, now)
}

fn txt_values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| match &r.data {
            RData::TXT(txt) => txt
                .txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
            other => panic!("not a TXT record: {other:?}"),
        })
        .collect()
}

/// The SOA of a negative answer, checked field by field.
fn assert_soa_authority(response: &Message) {
    assert!(response.answers.is_empty(), "{response}");
    let [record] = response.authorities.as_slice() else {
        panic!("expected one SOA in authority: {response}");
    };
    let RData::SOA(soa) = &record.data else {
        panic!("not an SOA: {record:?}");
    };
    assert_eq!(record.name, Name::from_ascii("ts.example.com.").unwrap());
    assert_eq!(soa.mname, Name::from_ascii("headway.example.com.").unwrap());
    assert_eq!(
        soa.rname,
        Name::from_ascii("hostmaster.ts.example.com.").unwrap()
    );
    assert_eq!(
        (soa.refresh, soa.retry, soa.expire, soa.minimum),
        (3600, 600, 86400, 60)
    );
}

#[test]
fn txt_answer_after_publish() {
    let (zone, now) = (zone(), Instant::now());
    zone.challenges.publish(CHALLENGE, VALUE, now).unwrap();
    let response = ask(
        &zone,
        &query(CHALLENGE, RecordType::TXT),
        Transport::Udp,
        now,
    );
    assert_eq!(response.id, 0x5157);
    assert_eq!(response.message_type, MessageType::Response);
    assert_eq!(response.response_code, ResponseCode::NoError);
    assert!(response.authoritative);
    assert!(response.recursion_desired, "RD is copied");
    assert!(!response.recursion_available);
    assert!(!response.truncation);
    assert_eq!(txt_values(&response.answers), [VALUE]);
    assert_eq!(response.answers[0].ttl, 60);
}

#[test]
fn each_value_is_its_own_record() {
    let (zone, now) = (zone(), Instant::now());
    zone.challenges.publish(CHALLENGE, "first", now).unwrap();
    zone.challenges.publish(CHALLENGE, "second", now).unwrap();
    let response = ask(
        &zone,
        &query(CHALLENGE, RecordType::TXT),
        Transport::Udp,
        now,
    );
    assert_eq!(txt_values(&response.answers), ["first", "second"]);
}

#[test]
fn question_keeps_the_clients_letter_case() {
    let (zone, now) = (zone(), Instant::now());
    zone.challenges.publish(CHALLENGE, VALUE, now).unwrap();
    let asked = Name::from_ascii("_ACME-Challenge.NoDe.Ts.ExAmple.CoM.").unwrap();
    let mut message = Message::new(7, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(asked.clone(), RecordType::TXT));
    let response = ask(&zone, &message, Transport::Udp, now);
    assert!(response.queries[0].name().eq_case(&asked));
    assert_eq!(txt_values(&response.answers), [VALUE]);
    assert!(response.answers[0].name.eq_case(&asked));
}

#[test]
fn names_outside_the_zone_are_refused() {
    let (zone, now) = (zone(), Instant::now());
    for name in ["example.org.", "example.com.", "xts.example.com.", "."] {
        let response = ask(&zone, &query(name, RecordType::A), Transport::Udp, now);
        assert_eq!(response.response_code, ResponseCode::Refused, "{name}");
        assert!(!response.authoritative, "{name}");
        assert!(response.answers.is_empty() && response.authorities.is_empty());
    }
}

#[test]
fn missing_names_are_nxdomain_with_the_soa() {
    let (zone, now) = (zone(), Instant::now());
    let response = ask(
        &zone,
        &query("nothing.ts.example.com.", RecordType::A),
        Transport::Udp,
        now,
    );
    assert_eq!(response.response_code, ResponseCode::NXDomain);
    assert!(response.authoritative);
    assert_soa_authority(&response);
}

#[test]
fn names_above_a_challenge_exist_without_data() {
    // Resolvers that minimise query names ask `node.ts.example.com` first; an
    // NXDOMAIN there would hide the challenge below it (RFC 8020).
    let (zone, now) = (zone(), Instant::now());
    zone.challenges.publish(CHALLENGE, VALUE, now).unwrap();
    let response = ask(
        &zone,
        &query("node.ts.example.com.", RecordType::A),
        Transport::Udp,
        now,
    );
    assert_eq!(response.response_code, ResponseCode::NoError);
    assert_soa_authority(&response);
}

#[test]
fn other_types_are_nodata() {
    let (zone, now) = (zone(), Instant::now());
    zone.challenges.publish(CHALLENGE, VALUE, now).unwrap();
    for (name, record_type) in [
        (CHALLENGE, RecordType::CAA),
        (CHALLENGE, RecordType::A),
        (APEX, RecordType::CAA),
        (APEX, RecordType::A),
        (APEX, RecordType::TXT),
    ] {
        let response = ask(&zone, &query(name, record_type), Transport::Udp, now);
        assert_eq!(
            response.response_code,
            ResponseCode::NoError,
            "{name} {record_type}"
        );
        assert!(response.authoritative);
        assert_soa_authority(&response);
    }
}

#[test]
fn apex_has_soa_and_ns() {
    let (zone, now) = (zone(), Instant::now());
    let soa = ask(&zone, &query(APEX, RecordType::SOA), Transport::Udp, now);
    assert_eq!(soa.response_code, ResponseCode::NoError);
    assert!(soa.authoritative);
    let [record] = soa.answers.as_slice() else {
        panic!("one SOA: {soa}");
    };
    let RData::SOA(data) = &record.data else {
        panic!("not an SOA: {record:?}");
    };
    assert_eq!(
        data.mname,
        Name::from_ascii("headway.example.com.").unwrap()
    );

    let ns = ask(&zone, &query(APEX, RecordType::NS), Transport::Udp, now);
    let [record] = ns.answers.as_slice() else {
        panic!("one NS: {ns}");
    };
    let RData::NS(data) = &record.data else {
        panic!("not an NS: {record:?}");
    };
    assert_eq!(data.0, Name::from_ascii("headway.example.com.").unwrap());

    let any = ask(&zone, &query(APEX, RecordType::ANY), Transport::Udp, now);
    let types: Vec<_> = any.answers.iter().map(Record::record_type).collect();
    assert_eq!(types, [RecordType::SOA, RecordType::NS]);
}

#[test]
fn oversized_udp_answers_are_truncated() {
    let (zone, now) = (zone(), Instant::now());
    for i in 0..MAX_VALUES_PER_NAME {
        let value = format!("{i}{}", "x".repeat(254));
        zone.challenges.publish(CHALLENGE, &value, now).unwrap();
    }
    // About 2 KiB of answers: over 512 without EDNS and over our 1232 with it.
    for message in [
        query(CHALLENGE, RecordType::TXT),
        with_edns(query(CHALLENGE, RecordType::TXT), 4096),
    ] {
        let udp = ask(&zone, &message, Transport::Udp, now);
        assert!(udp.truncation, "{udp}");
        assert!(udp.answers.is_empty());
        assert_eq!(udp.queries, message.queries);
        assert_eq!(udp.edns.is_some(), message.edns.is_some());
        let tcp = ask(&zone, &message, Transport::Tcp, now);
        assert!(!tcp.truncation);
        assert_eq!(tcp.answers.len(), MAX_VALUES_PER_NAME);
    }
}

#[test]
fn edns_is_answered_with_edns() {
    let (zone, now) = (zone(), Instant::now());
    zone.challenges
        .publish(CHALLENGE, &"y".repeat(255), now)
        .unwrap();
    zone.challenges
        .publish(CHALLENGE, &"z".repeat(255), now)
        .unwrap();
    // 2 × 255 bytes do not fit in 512 but fit in the client's 1232.
    let plain = ask(
        &zone,
        &query(CHALLENGE, RecordType::TXT),
        Transport::Udp,
        now,
    );
    assert!(plain.truncation && plain.edns.is_none());
    let message = with_edns(query(CHALLENGE, RecordType::TXT), 1232);
    let response = ask(&zone, &message, Transport::Udp, now);
    assert!(!response.truncation);
    assert_eq!(response.answers.len(), 2);
    assert_eq!(response.edns.as_ref().unwrap().max_payload(), 1232);
}

#[test]
fn unknown_edns_versions_are_badvers() {
    let (zone, now) = (zone(), Instant::now());
    let mut message = with_edns(query(APEX, RecordType::SOA), 1232);
    message.edns.as_mut().unwrap().set_version(1);
    let response = ask(&zone, &message, Transport::Udp, now);
    // BADVERS and BADSIG share the code 16; hickory reads it as the latter.
    assert_eq!(u16::from(response.response_code), 16);
    assert!(response.edns.is_some());
}

#[test]
fn malformed_messages_are_formerr() {
    let (zone, now) = (zone(), Instant::now());
    // A header claiming one question, followed by bytes that are not one.
    let mut garbage = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0x3f, 0xff, 0xff]);
    let response = ask_raw(&zone, &garbage, Transport::Udp, now);
    assert_eq!(response.id, 0xABCD);
    assert_eq!(response.response_code, ResponseCode::FormErr);
    // No questions, and two.
    let mut none = query(APEX, RecordType::SOA);
    none.queries.clear();
    let mut two = query(APEX, RecordType::SOA);
    two.add_query(Query::query(
        Name::from_ascii(APEX).unwrap(),
        RecordType::NS,
    ));
    for message in [none, two] {
        let response = ask(&zone, &message, Transport::Udp, now);
        assert_eq!(response.response_code, ResponseCode::FormErr, "{message}");
        assert!(response.answers.is_empty());
    }
}

#[test]
fn responses_are_never_answered() {
    let mut response_bit = query(APEX, RecordType::SOA);
    response_bit.metadata.message_type = MessageType::Response;
    let bytes = response_bit.to_vec().unwrap();
    assert_eq!(
        answer(&zone(), &bytes, Transport::Udp, Instant::now()),
        None
    );
}

#[test]
fn headerless_scraps_are_dropped() {
    let (zone, now) = (zone(), Instant::now());
    assert_eq!(answer(&zone, &[1, 2, 3], Transport::Udp, now), None);
    assert_eq!(answer(&zone, &[], Transport::Tcp, now), None);
}

#[test]
fn other_opcodes_are_notimp() {
    let (zone, now) = (zone(), Instant::now());
    let mut update = Message::new(99, MessageType::Query, OpCode::Update);
    update.add_query(Query::query(
        Name::from_ascii(APEX).unwrap(),
        RecordType::SOA,
    ));
    let response = ask(&zone, &update, Transport::Udp, now);
    assert_eq!(response.id, 99);
    assert_eq!(response.op_code, OpCode::Update);
    assert_eq!(response.response_code, ResponseCode::NotImp);
}

#[test]
fn zone_transfers_are_refused() {
    let (zone, now) = (zone(), Instant::now());
    let response = ask(&zone, &query(APEX, RecordType::AXFR), Transport::Tcp, now);
    assert_eq!(response.response_code, ResponseCode::Refused);
}

#[test]
fn expired_values_are_gone() {
    let (zone, now) = (zone(), Instant::now());
    zone.challenges.publish(CHALLENGE, VALUE, now).unwrap();
    let later = now + CHALLENGE_TTL + Duration::from_secs(1);
    let response = ask(
        &zone,
        &query(CHALLENGE, RecordType::TXT),
        Transport::Udp,
        later,
    );
    assert_eq!(response.response_code, ResponseCode::NXDomain);
    assert!(zone.challenges.txt(CHALLENGE, later).is_empty());
}

#[test]
fn garbage_never_panics() {
    // Every prefix of a real query, and every single-byte corruption of it.
    let (zone, now) = (zone(), Instant::now());
    zone.challenges.publish(CHALLENGE, VALUE, now).unwrap();
    let bytes = with_edns(query(CHALLENGE, RecordType::TXT), 1232)
        .to_vec()
        .unwrap();
    for len in 0..bytes.len() {
        let _ = answer(&zone, &bytes[..len], Transport::Udp, now);
    }
    for at in 0..bytes.len() {
        for value in [0x00, 0x3f, 0xc0, 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[at] = value;
            let _ = answer(&zone, &corrupt, Transport::Udp, now);
        }
    }
}

#[test]
fn challenges_normalise_names() {
    let (challenges, now) = (Challenges::new(), Instant::now());
    challenges
        .publish("_ACME-Challenge.Node.TS.example.com.", VALUE, now)
        .unwrap();
    assert_eq!(challenges.txt(CHALLENGE, now), [VALUE]);
    assert_eq!(
        challenges.txt("_acme-challenge.NODE.ts.example.com.", now),
        [VALUE]
    );
    assert!(challenges.has_names_below("node.ts.example.com", now));
    assert!(!challenges.has_names_below(CHALLENGE, now));
    assert!(!challenges.has_names_below("de.ts.example.com", now));
    challenges.remove("_acme-challenge.node.ts.example.com.");
    assert!(challenges.is_empty());
}

#[test]
fn challenges_check_values() {
    let (challenges, now) = (Challenges::new(), Instant::now());
    let publish = |value: &str| challenges.publish(CHALLENGE, value, now);
    assert_eq!(publish(""), Err(ChallengeError::EmptyValue));
    assert_eq!(
        publish(&"a".repeat(256)),
        Err(ChallengeError::ValueTooLong(256))
    );
    assert_eq!(publish("a\nb"), Err(ChallengeError::ValueNotPrintable));
    assert_eq!(publish("é"), Err(ChallengeError::ValueNotPrintable));
    assert_eq!(publish(&"a".repeat(255)), Ok(()));
    assert!(matches!(
        challenges.publish("a..b", VALUE, now),
        Err(ChallengeError::InvalidName(_))
    ));
    assert!(matches!(
        challenges.publish("", VALUE, now),
        Err(ChallengeError::InvalidName(_))
    ));
}

#[test]
fn challenges_keep_eight_values_and_refresh_republished_ones() {
    let (challenges, t0) = (Challenges::new(), Instant::now());
    let minutes = |m: u64| t0 + Duration::from_secs(60 * m);
    for i in 0..=MAX_VALUES_PER_NAME {
        challenges.publish(CHALLENGE, &format!("v{i}"), t0).unwrap();
    }
    let values = challenges.txt(CHALLENGE, t0);
    assert_eq!(values.len(), MAX_VALUES_PER_NAME);
    assert_eq!(values[0], "v1", "the oldest went");

    challenges.remove(CHALLENGE);
    challenges.publish(CHALLENGE, "a", t0).unwrap();
    challenges.publish(CHALLENGE, "b", minutes(30)).unwrap();
    challenges.publish(CHALLENGE, "a", minutes(50)).unwrap();
    assert_eq!(challenges.txt(CHALLENGE, minutes(70)), ["b", "a"]);
    assert_eq!(challenges.txt(CHALLENGE, minutes(95)), ["a"]);
    assert!(challenges.txt(CHALLENGE, minutes(111)).is_empty());
}

#[test]
fn challenges_cap_the_number_of_names() {
    let (challenges, now) = (Challenges::new(), Instant::now());
    for i in 0..MAX_NAMES {
        challenges
            .publish(&format!("_acme-challenge.n{i}.{APEX}"), VALUE, now)
            .unwrap();
    }
    let extra = format!("_acme-challenge.extra.{APEX}");
    assert_eq!(
        challenges.publish(&extra, VALUE, now),
        Err(ChallengeError::Full)
    );
    // Names already published still take new values.
    challenges
        .publish(&format!("_acme-challenge.n0.{APEX}"), "another", now)
        .unwrap();
    // Once the others expire, they make room.
    let later = now + CHALLENGE_TTL + Duration::from_secs(1);
    challenges.publish(&extra, VALUE, later).unwrap();
    assert_eq!(challenges.len(), 1);
}

#[tokio::test]
async fn serves_txt_over_udp_and_tcp() {
    let zone = Arc::new(zone());
    zone.challenges
        .publish(CHALLENGE, VALUE, Instant::now())
        .unwrap();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(zone, udp, tcp, async {
        let _ = stopped.await;
    }));
    let deadline = Duration::from_secs(5);
    let request = query(CHALLENGE, RecordType::TXT).to_vec().unwrap();

    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&request, udp_addr).await.unwrap();
    let mut buf = [0u8; 4096];
    let (len, _) = tokio::time::timeout(deadline, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let response = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(txt_values(&response.answers), [VALUE]);

    // Two messages on one connection.
    let mut stream = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
    for _ in 0..2 {
        let mut framed = u16::try_from(request.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&request);
        stream.write_all(&framed).await.unwrap();
        let mut prefix = [0u8; 2];
        tokio::time::timeout(deadline, stream.read_exact(&mut prefix))
            .await
            .unwrap()
            .unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut body).await.unwrap();
        let response = Message::from_vec(&body).unwrap();
        assert_eq!(txt_values(&response.answers), [VALUE]);
    }

    stop.send(()).unwrap();
    tokio::time::timeout(deadline, server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn one_address_cannot_take_every_tcp_place() {
    let zone = Arc::new(zone());
    zone.challenges
        .publish(CHALLENGE, VALUE, Instant::now())
        .unwrap();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(zone, udp, tcp, async {
        let _ = stopped.await;
    }));
    let from = |ip: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((ip, 0).into()).unwrap();
        socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
    };
    // A quiet address holds its share of places…
    let mut held = Vec::new();
    for _ in 0..super::listener::MAX_PER_SOURCE {
        held.push(from([127, 0, 0, 1]).await);
    }
    // …and its next connection is closed at once.
    let mut extra = from([127, 0, 0, 1]).await;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the extra connection stayed open"
    );
    // Another address is served meanwhile.
    let request = query(CHALLENGE, RecordType::TXT).to_vec().unwrap();
    let mut other = from([127, 0, 0, 2]).await;
    let mut framed = u16::try_from(request.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    other.write_all(&framed).await.unwrap();
    let mut prefix = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), other.read_exact(&mut prefix))
        .await
        .expect("another address is answered")
        .unwrap();
    drop(held);
    stop.send(()).unwrap();
    server.await.unwrap();
}
