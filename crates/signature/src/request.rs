//! The timestamped request signature: `t=<unix seconds>,v1=<hex HMAC>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::SignatureError;

type HmacSha256 = Hmac<Sha256>;

/// The HTTP header that carries a request signature.
pub const SIGNATURE_HEADER: &str = "Ticketing-Signature";

/// Length of a v1 signature in hex characters (HMAC-SHA256 is 32 bytes).
const V1_HEX_LEN: usize = 64;

/// At most this many `v1` entries are tried, so a hostile header cannot make us compute
/// an unbounded number of MACs.
const MAX_V1_ENTRIES: usize = 8;

/// Signs `body` at `timestamp` (unix seconds) with `secret`.
///
/// Returns the header value `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
/// with the MAC in lowercase hex. Timestamps must not be negative: [`verify`] refuses them.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Verifies a signature header produced by [`sign`] against `body`.
///
/// Accepts the request when any of `secrets` (several during a rotation) produced any of
/// the header's `v1` entries. Refuses a malformed header ([`SignatureError::Malformed`]), a
/// MAC that no secret produced ([`SignatureError::Mismatch`]), and then an authentic
/// timestamp more than `tolerance_secs` older than `now` ([`SignatureError::Expired`]) or
/// ahead of it ([`SignatureError::FromFuture`]). Entries with unknown keys are ignored so
/// that a later scheme can be added beside `v1`.
///
/// The MAC is checked before the timestamp so that `Expired` is only ever reported for a
/// delivery we really signed (a replay), never for a forgery.
pub fn verify(
    secrets: &[&[u8]],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let parsed = parse_header(header)?;
    let authentic = secrets.iter().any(|secret| {
        let keyed = mac(secret, parsed.timestamp, body);
        parsed
            .v1
            .iter()
            .any(|candidate| keyed.clone().verify_slice(candidate).is_ok())
    });
    if !authentic {
        return Err(SignatureError::Mismatch);
    }
    let timestamp = parsed.timestamp;
    if now.saturating_sub(timestamp) > tolerance_secs {
        return Err(SignatureError::Expired {
            timestamp,
            now,
            tolerance_secs,
        });
    }
    if timestamp.saturating_sub(now) > tolerance_secs {
        return Err(SignatureError::FromFuture {
            timestamp,
            now,
            tolerance_secs,
        });
    }
    Ok(())
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

struct ParsedHeader {
    timestamp: i64,
    v1: Vec<[u8; 32]>,
}

/// Parses strictly: one `t` of ASCII digits, `v1` entries of exactly 64 lowercase hex
/// digits, no whitespace. Strictness matters: were uppercase hex accepted, two different
/// headers would carry the same signature.
fn parse_header(header: &str) -> Result<ParsedHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .split_once('=')
            .ok_or(SignatureError::Malformed("entry without '='"))?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one timestamp"));
                }
                timestamp = Some(parse_timestamp(value)?);
            }
            "v1" => {
                if v1.len() == MAX_V1_ENTRIES {
                    return Err(SignatureError::Malformed("too many v1 signatures"));
                }
                v1.push(parse_v1(value)?);
            }
            "" => return Err(SignatureError::Malformed("entry with an empty key")),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no timestamp"))?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    Ok(ParsedHeader { timestamp, v1 })
}

fn parse_timestamp(value: &str) -> Result<i64, SignatureError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed(
            "timestamp is not unsigned decimal",
        ));
    }
    value
        .parse()
        .map_err(|_| SignatureError::Malformed("timestamp out of range"))
}

fn parse_v1(value: &str) -> Result<[u8; 32], SignatureError> {
    if value.len() != V1_HEX_LEN {
        return Err(SignatureError::Malformed(
            "v1 signature is not 64 hex digits",
        ));
    }
    if !value
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(SignatureError::Malformed(
            "v1 signature is not lowercase hex",
        ));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out)
        .map_err(|_| SignatureError::Malformed("v1 signature is not lowercase hex"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    const T: i64 = 1_700_000_000;

    #[test]
    fn signs_in_the_documented_format() {
        let header = sign(SECRET, T, BODY);
        let (t, v1) = header.split_once(",v1=").unwrap();
        assert_eq!(t, "t=1700000000");
        assert_eq!(v1.len(), 64);
        assert!(v1.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    }

    #[test]
    fn matches_an_independently_computed_mac() {
        // The MAC input is "<t>.<body>", computed here without going through `sign`.
        let mut direct = HmacSha256::new_from_slice(b"key").unwrap();
        direct.update(b"42.hello");
        let expected = hex::encode(direct.finalize().into_bytes());
        assert_eq!(sign(b"key", 42, b"hello"), format!("t=42,v1={expected}"));
    }

    #[test]
    fn reproduces_the_worked_example_in_docs_webhooks_md() {
        let body = br#"{"id":"evt_1","type":"charge.succeeded","charge_id":"ch_1","order_id":"0192a5b0-c3d4-7e6f-8a9b-0c1d2e3f4a5b","amount":4500,"currency":"EUR","created":1700000000}"#;
        let header =
            "t=1700000000,v1=bf6ea9f368a59d1ebd3fa68e88ef8da64f54a3567636cbf09e94b83178fd17f4";
        assert_eq!(sign(b"whsec_example", 1_700_000_000, body), header);
        assert_eq!(
            verify(&[b"whsec_example"], header, body, 1_700_000_000, 300),
            Ok(())
        );
    }

    #[test]
    fn verifies_within_tolerance_on_both_sides() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(verify(&[SECRET], &header, BODY, T, 300), Ok(()));
        assert_eq!(verify(&[SECRET], &header, BODY, T + 300, 300), Ok(()));
        assert_eq!(verify(&[SECRET], &header, BODY, T - 300, 300), Ok(()));
    }

    #[test]
    fn refuses_an_old_timestamp_as_expired() {
        let header = sign(SECRET, T, BODY);
        let err = verify(&[SECRET], &header, BODY, T + 301, 300).unwrap_err();
        assert_eq!(
            err,
            SignatureError::Expired {
                timestamp: T,
                now: T + 301,
                tolerance_secs: 300
            }
        );
        assert_eq!(err.code(), "SIGNATURE_EXPIRED");
    }

    #[test]
    fn refuses_a_future_timestamp() {
        let header = sign(SECRET, T, BODY);
        let err = verify(&[SECRET], &header, BODY, T - 301, 300).unwrap_err();
        assert!(matches!(err, SignatureError::FromFuture { .. }));
        assert_eq!(err.code(), "SIGNATURE_FROM_FUTURE");
    }

    #[test]
    fn a_forged_old_header_is_a_mismatch_not_expired() {
        let header = format!("t={},v1={}", T - 10_000, "0".repeat(64));
        assert_eq!(
            verify(&[SECRET], &header, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refuses_a_wrong_secret_and_an_altered_body() {
        let header = sign(SECRET, T, BODY);
        let err = verify(&[b"other"], &header, BODY, T, 300).unwrap_err();
        assert_eq!(err, SignatureError::Mismatch);
        assert_eq!(err.code(), "SIGNATURE_MISMATCH");
        assert_eq!(
            verify(&[SECRET], &header, b"{}", T, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&[], &header, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn moving_the_timestamp_breaks_the_mac() {
        let header = sign(SECRET, T, BODY);
        let moved = header.replacen("t=1700000000", "t=1700000001", 1);
        assert_eq!(
            verify(&[SECRET], &moved, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn accepts_any_of_several_secrets_and_signatures_during_rotation() {
        let old = sign(b"old", T, BODY);
        let new = sign(b"new", T, BODY);
        let new_sig = new.split_once(",v1=").unwrap().1;
        let both = format!("{old},v1={new_sig}");
        assert_eq!(verify(&[b"new"], &both, BODY, T, 300), Ok(()));
        assert_eq!(verify(&[b"old"], &both, BODY, T, 300), Ok(()));
        assert_eq!(verify(&[b"x", b"new"], &new, BODY, T, 300), Ok(()));
        assert_eq!(
            verify(&[b"x"], &both, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn ignores_unknown_schemes() {
        let header = format!("{},v0=abc", sign(SECRET, T, BODY));
        assert_eq!(verify(&[SECRET], &header, BODY, T, 300), Ok(()));
    }

    #[test]
    fn refuses_malformed_headers_with_a_stable_code() {
        let good = sign(SECRET, T, BODY);
        let sig = good.split_once(",v1=").unwrap().1.to_string();
        let cases = [
            String::new(),
            "garbage".to_string(),
            format!("v1={sig}"),
            format!("t={T}"),
            format!("t={T},t={T},v1={sig}"),
            format!("t=-{T},v1={sig}"),
            format!("t=+{T},v1={sig}"),
            format!("t= {T},v1={sig}"),
            format!("t=99999999999999999999999,v1={sig}"),
            format!("t={T},v1={}", sig.to_uppercase()),
            format!("t={T},v1={}", &sig[..63]),
            format!("t={T},v1={sig}0"),
            format!("t={T},v1=zz{}", &sig[2..]),
            format!("t={T}, v1={sig}"),
            format!("t={T},,v1={sig}"),
            format!("t={T},v1={sig},"),
            format!("t={T},={sig}"),
            format!("t={T}{}", format!(",v1={sig}").repeat(MAX_V1_ENTRIES + 1)),
            "t=1,v1=é".to_string(),
        ];
        for case in cases {
            let err = verify(&[SECRET], &case, BODY, T, 300).unwrap_err();
            assert!(
                matches!(err, SignatureError::Malformed(_)),
                "{case:?} gave {err:?}"
            );
            assert_eq!(err.code(), "SIGNATURE_MALFORMED");
        }
    }

    #[test]
    fn extreme_clock_values_do_not_overflow() {
        let header = sign(SECRET, 0, BODY);
        assert!(matches!(
            verify(&[SECRET], &header, BODY, i64::MAX, 300),
            Err(SignatureError::Expired { .. })
        ));
        let header = sign(SECRET, i64::MAX, BODY);
        assert!(matches!(
            verify(&[SECRET], &header, BODY, i64::MIN, 300),
            Err(SignatureError::FromFuture { .. })
        ));
    }
}
