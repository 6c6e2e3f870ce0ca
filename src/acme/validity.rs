//! When a certificate is valid: `notBefore` and `notAfter` read from its DER
//! (RFC 5280 §4.1), which is all the renewal schedule needs from it.

use chrono::{DateTime, NaiveDate, Utc};

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl Validity {
    /// Reads the validity of the DER certificate `der`; `None` if it is not one.
    pub fn of(der: &[u8]) -> Option<Validity> {
        let (certificate, _) = element(der, SEQUENCE)?;
        let (tbs, _) = element(certificate, SEQUENCE)?;
        let mut rest = tbs;
        // [0] EXPLICIT version, present in every v3 certificate.
        if rest.first() == Some(&VERSION_TAG) {
            rest = element(rest, VERSION_TAG)?.1;
        }
        rest = element(rest, INTEGER)?.1; // serialNumber
        rest = element(rest, SEQUENCE)?.1; // signature algorithm
        rest = element(rest, SEQUENCE)?.1; // issuer
        let (validity, _) = element(rest, SEQUENCE)?;
        let (not_before, rest) = time(validity)?;
        let (not_after, _) = time(rest)?;
        Some(Validity {
            not_before,
            not_after,
        })
    }

    /// When to renew: a third of the lifetime before the end (30 days of
    /// Let's Encrypt's 90).
    pub fn renew_at(&self) -> DateTime<Utc> {
        self.not_after - (self.not_after - self.not_before) / 3
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION_TAG: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The contents of the element with `tag` that opens `input`, and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (bytes, after) = rest.split_at(octets);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte))
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`) at the start of `input`.
fn time(input: &[u8]) -> Option<(DateTime<Utc>, &[u8])> {
    let tag = *input.first()?;
    let (text, rest) = element(input, tag)?;
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, digits) = match tag {
        UTC_TIME if text.len() == 12 => {
            let short: i32 = text.get(..2)?.parse().ok()?;
            (
                if short < 50 {
                    2000 + short
                } else {
                    1900 + short
                },
                &text[2..],
            )
        }
        GENERALIZED_TIME if text.len() == 14 => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |at: usize| -> Option<u32> { digits.get(at..at + 2)?.parse().ok() };
    let at = NaiveDate::from_ymd_opt(year, field(0)?, field(2)?)?.and_hms_opt(
        field(4)?,
        field(6)?,
        field(8)?,
    )?;
    Some((at.and_utc(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["acme.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_both_time_forms_and_schedules_renewal_a_third_before_the_end() {
        // Before 2050 the dates are UTCTime; from 2050 on, GeneralizedTime.
        let validity = Validity::of(&certificate((2026, 1, 1), (2026, 4, 1))).unwrap();
        assert_eq!(
            validity.not_before,
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            validity.not_after,
            Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap()
        );
        // 90 days: renew 30 days before the end.
        assert_eq!(
            validity.renew_at(),
            Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
        );
        let far = Validity::of(&certificate((2049, 6, 1), (2051, 6, 1))).unwrap();
        assert_eq!(
            far.not_after,
            Utc.with_ymd_and_hms(2051, 6, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn anything_else_is_not_a_certificate() {
        let der = certificate((2026, 1, 1), (2026, 4, 1));
        for cut in [0, 1, 2, 10, 100, der.len() / 2] {
            assert_eq!(Validity::of(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(Validity::of(b"-----BEGIN CERTIFICATE-----"), None);
        // A length that claims more than there is.
        assert_eq!(
            Validity::of(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x30]),
            None
        );
    }
}
