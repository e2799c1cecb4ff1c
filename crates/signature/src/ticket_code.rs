//! Signed ticket codes: what a ticket's QR code carries and the door verifies.
//!
//! A code is the base64url (no padding) encoding of 65 bytes:
//!
//! | bytes | content |
//! |---|---|
//! | 1 | format version, `1` |
//! | 16 | ticket id (UUID) |
//! | 16 | event id (UUID) |
//! | 16 | the ticket's secret |
//! | 16 | HMAC-SHA256 tag over the 49 bytes above, truncated to 128 bits |
//!
//! 87 characters, all of `A-Z a-z 0-9 - _`, fit a QR code of version 5 in byte mode and
//! need no escaping in a URL. The tag is keyed with a server-side key that never leaves the
//! system, so no one can mint a code; the ticket's secret lets the system revoke a single
//! code (reissue the ticket with a new secret) without rotating the key for everyone.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::SignatureError;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 1 + 16 + 16 + 16;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = PAYLOAD_LEN + TAG_LEN;

/// Length in characters of every ticket code [`TicketCodeSigner::issue`] produces.
pub const TICKET_CODE_LEN: usize = (RAW_LEN * 8).div_ceil(6);

/// Keeps ticket-code tags apart from any other MAC made with the same key.
const DOMAIN: &[u8] = b"ticketing/ticket-code\0";

/// What a ticket code asserts, and what the door gets back from a valid code.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketClaims {
    /// The ticket the code admits.
    pub ticket_id: Uuid,
    /// The ticketed event, so a door can refuse another event's ticket without a lookup.
    pub event_id: Uuid,
    /// The ticket's own random secret; the door compares it with the ticket's current one,
    /// so a reissued ticket's old code stops working.
    pub secret: [u8; 16],
}

impl std::fmt::Debug for TicketClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketClaims")
            .field("ticket_id", &self.ticket_id)
            .field("event_id", &self.event_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Issues and verifies ticket codes with a server-side key.
#[derive(Clone)]
pub struct TicketCodeSigner {
    /// Keyed with the current key: signs new codes and verifies them.
    current: HmacSha256,
    /// Keyed with keys that no longer sign but whose codes are still honoured, so the key
    /// can be rotated without invalidating tickets already sent to buyers.
    retired: Vec<HmacSha256>,
}

impl std::fmt::Debug for TicketCodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketCodeSigner")
            .field("retired_keys", &self.retired.len())
            .finish_non_exhaustive()
    }
}

impl TicketCodeSigner {
    /// A signer that issues and verifies codes with `key` (at least 32 random bytes
    /// recommended).
    pub fn new(key: &[u8]) -> Self {
        Self {
            current: keyed(key),
            retired: Vec::new(),
        }
    }

    /// Also accepts codes issued under `key`, which no longer signs new ones.
    pub fn with_retired_key(mut self, key: &[u8]) -> Self {
        self.retired.push(keyed(key));
        self
    }

    /// The code for `claims`: [`TICKET_CODE_LEN`] characters of base64url, no padding.
    pub fn issue(&self, claims: &TicketClaims) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[0] = VERSION;
        raw[1..17].copy_from_slice(claims.ticket_id.as_bytes());
        raw[17..33].copy_from_slice(claims.event_id.as_bytes());
        raw[33..49].copy_from_slice(&claims.secret);
        let tag = tag(&self.current, &raw[..PAYLOAD_LEN]);
        raw[PAYLOAD_LEN..].copy_from_slice(&tag.finalize().into_bytes()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks the code's tag, with no lookup, and returns its claims.
    ///
    /// A code of the wrong length, not canonical base64url or of an unknown version is
    /// [`SignatureError::Malformed`]; a forged, altered or truncated code whose shape is
    /// right is [`SignatureError::Mismatch`].
    pub fn verify(&self, code: &str) -> Result<TicketClaims, SignatureError> {
        if code.len() != TICKET_CODE_LEN {
            return Err(SignatureError::Malformed(
                "ticket code has the wrong length",
            ));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(code)
            .map_err(|_| SignatureError::Malformed("ticket code is not base64url"))?;
        let raw: [u8; RAW_LEN] = raw
            .try_into()
            .map_err(|_| SignatureError::Malformed("ticket code has the wrong length"))?;
        if raw[0] != VERSION {
            return Err(SignatureError::Malformed("unknown ticket code version"));
        }
        let (payload, presented) = raw.split_at(PAYLOAD_LEN);
        let authentic = std::iter::once(&self.current)
            .chain(&self.retired)
            .any(|key| tag(key, payload).verify_truncated_left(presented).is_ok());
        if !authentic {
            return Err(SignatureError::Mismatch);
        }
        let uuid = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&raw[range]);
            Uuid::from_bytes(bytes)
        };
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&raw[33..49]);
        Ok(TicketClaims {
            ticket_id: uuid(1..17),
            event_id: uuid(17..33),
            secret,
        })
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts any key length")
}

fn tag(key: &HmacSha256, payload: &[u8]) -> HmacSha256 {
    let mut mac = key.clone();
    mac.update(DOMAIN);
    mac.update(payload);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TicketClaims {
        TicketClaims {
            ticket_id: Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0001),
            event_id: Uuid::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0002),
            secret: *b"0123456789abcdef",
        }
    }

    #[test]
    fn round_trips_and_is_url_and_qr_friendly() {
        let signer = TicketCodeSigner::new(b"ticket key");
        let code = signer.issue(&claims());
        assert_eq!(code.len(), TICKET_CODE_LEN);
        assert_eq!(TICKET_CODE_LEN, 87);
        assert!(
            code.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(signer.verify(&code), Ok(claims()));
    }

    #[test]
    fn another_key_cannot_verify_or_forge() {
        let code = TicketCodeSigner::new(b"attacker").issue(&claims());
        let err = TicketCodeSigner::new(b"ticket key")
            .verify(&code)
            .unwrap_err();
        assert_eq!(err, SignatureError::Mismatch);
        assert_eq!(err.code(), "SIGNATURE_MISMATCH");
    }

    #[test]
    fn retired_keys_still_verify_but_never_sign() {
        let old = TicketCodeSigner::new(b"old").issue(&claims());
        let rotated = TicketCodeSigner::new(b"new").with_retired_key(b"old");
        assert_eq!(rotated.verify(&old), Ok(claims()));
        let fresh = rotated.issue(&claims());
        assert_eq!(TicketCodeSigner::new(b"new").verify(&fresh), Ok(claims()));
        assert_eq!(
            TicketCodeSigner::new(b"old").verify(&fresh),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refuses_malformed_codes() {
        let signer = TicketCodeSigner::new(b"ticket key");
        let code = signer.issue(&claims());
        let mut wrong_version = URL_SAFE_NO_PAD.decode(&code).unwrap();
        wrong_version[0] = 2;
        let cases = [
            String::new(),
            code[..TICKET_CODE_LEN - 1].to_string(),
            format!("{code}A"),
            format!("{code}="),
            code.replacen(&code[..1], "+", 1),
            code.replacen(&code[..1], "é", 1),
            URL_SAFE_NO_PAD.encode(wrong_version),
            "A".repeat(TICKET_CODE_LEN - 1) + "B",
        ];
        for case in cases {
            let err = signer.verify(&case).unwrap_err();
            assert!(
                matches!(err, SignatureError::Malformed(_)),
                "{case:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let signer = TicketCodeSigner::new(b"super secret key");
        assert!(!format!("{signer:?}").contains("super"));
        assert!(!format!("{:?}", claims()).contains("0123456789abcdef"));
    }
}
