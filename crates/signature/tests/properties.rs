//! Property tests: signatures and codes round-trip, and any single-bit change is refused.

use proptest::prelude::*;
use signature::{SignatureError, TICKET_CODE_LEN, TicketClaims, TicketCodeSigner, sign, verify};
use uuid::Uuid;

const TOLERANCE: i64 = 300;

/// Flips bit `bit` (0..7, so the text stays ASCII) of byte `index % len` of `text`.
fn flip_ascii_bit(text: &str, index: usize, bit: u8) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let i = index % bytes.len();
    bytes[i] ^= 1 << bit;
    String::from_utf8(bytes).expect("flipping one of the low 7 bits keeps ASCII")
}

fn claims() -> impl Strategy<Value = TicketClaims> {
    (any::<u128>(), any::<u128>(), any::<[u8; 16]>()).prop_map(|(t, e, secret)| TicketClaims {
        ticket_id: Uuid::from_u128(t),
        event_id: Uuid::from_u128(e),
        secret,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sign_then_verify_round_trips(
        secret in proptest::collection::vec(any::<u8>(), 0..80),
        timestamp in 0i64..=4_102_444_800,
        skew in -TOLERANCE..=TOLERANCE,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let header = sign(&secret, timestamp, &body);
        prop_assert_eq!(verify(&[&secret], &header, &body, timestamp + skew, TOLERANCE), Ok(()));
    }

    #[test]
    fn any_bit_flip_in_the_body_is_a_mismatch(
        secret in proptest::collection::vec(any::<u8>(), 1..64),
        timestamp in 0i64..=4_102_444_800,
        body in proptest::collection::vec(any::<u8>(), 1..512),
        index in any::<usize>(),
        bit in 0u8..8,
    ) {
        let header = sign(&secret, timestamp, &body);
        let mut altered = body.clone();
        let i = index % altered.len();
        altered[i] ^= 1 << bit;
        prop_assert_eq!(
            verify(&[&secret], &header, &altered, timestamp, TOLERANCE),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_bit_flip_in_the_header_is_refused(
        secret in proptest::collection::vec(any::<u8>(), 1..64),
        timestamp in 0i64..=4_102_444_800,
        body in proptest::collection::vec(any::<u8>(), 0..256),
        index in any::<usize>(),
        bit in 0u8..7,
    ) {
        let header = sign(&secret, timestamp, &body);
        let altered = flip_ascii_bit(&header, index, bit);
        // Generous tolerance: a flipped timestamp digit must fail on the MAC, not the clock.
        prop_assert!(verify(&[&secret], &altered, &body, timestamp, i64::MAX).is_err());
    }

    #[test]
    fn verify_never_panics_on_arbitrary_headers(header in ".{0,200}", body in ".{0,50}") {
        let _ = verify(&[b"secret"], &header, body.as_bytes(), 1_700_000_000, TOLERANCE);
    }

    #[test]
    fn ticket_codes_round_trip(key in proptest::collection::vec(any::<u8>(), 1..64), claims in claims()) {
        let signer = TicketCodeSigner::new(&key);
        let code = signer.issue(&claims);
        prop_assert_eq!(code.len(), TICKET_CODE_LEN);
        prop_assert_eq!(signer.verify(&code), Ok(claims));
    }

    #[test]
    fn any_bit_flip_in_a_ticket_code_is_refused(
        claims in claims(),
        index in any::<usize>(),
        bit in 0u8..7,
    ) {
        let signer = TicketCodeSigner::new(b"door key");
        let altered = flip_ascii_bit(&signer.issue(&claims), index, bit);
        prop_assert!(signer.verify(&altered).is_err());
    }

    #[test]
    fn a_truncated_or_extended_ticket_code_is_refused(
        claims in claims(),
        keep in 0usize..TICKET_CODE_LEN,
        extra in "[A-Za-z0-9_-]{1,4}",
    ) {
        let signer = TicketCodeSigner::new(b"door key");
        let code = signer.issue(&claims);
        prop_assert!(signer.verify(&code[..keep]).is_err());
        let extended = format!("{code}{extra}");
        prop_assert!(signer.verify(&extended).is_err());
    }

    #[test]
    fn a_random_string_is_never_a_valid_code(code in "[A-Za-z0-9_-]{87}") {
        prop_assert!(TicketCodeSigner::new(b"door key").verify(&code).is_err());
    }

    #[test]
    fn ticket_code_verify_never_panics(code in ".{0,120}") {
        let _ = TicketCodeSigner::new(b"door key").verify(&code);
    }
}
