//! Webhook parsing: the wire format, and every way a delivery is refused.

mod common;

use common::{SECRET, TOLERANCE, unix_now};
use payments::{
    DeclineReason, MAX_WEBHOOK_BODY_BYTES, RefundReason, ReplayGuard, WebhookError, WebhookEvent,
    WebhookEventType, parse_webhook,
};
use proptest::prelude::*;
use signature::SignatureError;
use uuid::Uuid;

fn event(kind: WebhookEventType) -> WebhookEvent {
    WebhookEvent {
        id: "evt_1".into(),
        kind,
        charge_id: "ch_1".into(),
        order_id: Uuid::from_u128(0x0192a5b0_c3d4_7e6f_8a9b_0c1d2e3f4a5b),
        amount: 4500,
        currency: "EUR".into(),
        created: 1_700_000_000,
        failure_reason: (kind == WebhookEventType::ChargeFailed)
            .then_some(DeclineReason::InsufficientFunds),
        refund_id: (kind == WebhookEventType::RefundSucceeded).then(|| "re_1".to_string()),
        refund_reason: (kind == WebhookEventType::RefundSucceeded)
            .then_some(RefundReason::HoldExpired),
    }
}

fn signed(body: &[u8], at: i64) -> String {
    signature::sign(SECRET, at, body)
}

#[test]
fn the_wire_format_is_the_documented_one() {
    let body = serde_json::to_string(&event(WebhookEventType::ChargeSucceeded)).unwrap();
    assert_eq!(
        body,
        r#"{"id":"evt_1","type":"charge.succeeded","charge_id":"ch_1","order_id":"0192a5b0-c3d4-7e6f-8a9b-0c1d2e3f4a5b","amount":4500,"currency":"EUR","created":1700000000}"#
    );
    let failed = serde_json::to_string(&event(WebhookEventType::ChargeFailed)).unwrap();
    assert!(failed.contains(r#""type":"charge.failed""#), "{failed}");
    assert!(
        failed.ends_with(r#""failure_reason":"insufficient_funds"}"#),
        "{failed}"
    );
    let refund = serde_json::to_string(&event(WebhookEventType::RefundSucceeded)).unwrap();
    assert!(
        refund.ends_with(r#""refund_id":"re_1","refund_reason":"hold_expired"}"#),
        "{refund}"
    );
}

#[test]
fn parses_every_type_when_the_signature_is_good() {
    for kind in [
        WebhookEventType::ChargeSucceeded,
        WebhookEventType::ChargeFailed,
        WebhookEventType::RefundSucceeded,
    ] {
        let body = serde_json::to_vec(&event(kind)).unwrap();
        let now = unix_now();
        let parsed = parse_webhook(&[SECRET], &signed(&body, now), &body, now, TOLERANCE);
        assert_eq!(parsed, Ok(event(kind)));
    }
}

#[test]
fn accepts_either_secret_during_rotation() {
    let body = serde_json::to_vec(&event(WebhookEventType::ChargeSucceeded)).unwrap();
    let now = unix_now();
    let header = signature::sign(b"old secret", now, &body);
    assert!(
        parse_webhook(
            &[b"new secret", b"old secret"],
            &header,
            &body,
            now,
            TOLERANCE
        )
        .is_ok()
    );
    assert!(parse_webhook(&[b"new secret"], &header, &body, now, TOLERANCE).is_err());
}

#[test]
fn refuses_a_tampered_body() {
    let body = serde_json::to_vec(&event(WebhookEventType::ChargeSucceeded)).unwrap();
    let now = unix_now();
    let header = signed(&body, now);
    let tampered = String::from_utf8(body).unwrap().replace("4500", "1");
    let err = parse_webhook(&[SECRET], &header, tampered.as_bytes(), now, TOLERANCE).unwrap_err();
    assert_eq!(err, WebhookError::Signature(SignatureError::Mismatch));
    assert_eq!(err.code(), "SIGNATURE_MISMATCH");
}

#[test]
fn refuses_an_expired_delivery_and_one_from_the_future() {
    let body = serde_json::to_vec(&event(WebhookEventType::ChargeSucceeded)).unwrap();
    let now = unix_now();
    let old = parse_webhook(&[SECRET], &signed(&body, now - 301), &body, now, TOLERANCE);
    assert_eq!(old.unwrap_err().code(), "SIGNATURE_EXPIRED");
    let future = parse_webhook(&[SECRET], &signed(&body, now + 301), &body, now, TOLERANCE);
    assert_eq!(future.unwrap_err().code(), "SIGNATURE_FROM_FUTURE");
}

#[test]
fn refuses_a_missing_or_malformed_header() {
    let body = serde_json::to_vec(&event(WebhookEventType::ChargeSucceeded)).unwrap();
    for header in ["", "t=1", "v1=00", "nonsense"] {
        let err = parse_webhook(&[SECRET], header, &body, unix_now(), TOLERANCE).unwrap_err();
        assert_eq!(err.code(), "SIGNATURE_MALFORMED", "{header:?}");
    }
}

#[test]
fn refuses_an_authentic_body_that_is_not_a_payment_event() {
    let mut bad_bodies: Vec<String> = vec![
        "not json".into(),
        "{}".into(),
        r#"{"id":"evt_1","type":"charge.refunded","charge_id":"ch_1","order_id":"0192a5b0-c3d4-7e6f-8a9b-0c1d2e3f4a5b","amount":1,"currency":"EUR","created":1}"#.into(),
        r#"{"id":"evt_1","type":"charge.succeeded","charge_id":"ch_1","order_id":"nope","amount":1,"currency":"EUR","created":1}"#.into(),
        r#"{"id":"evt_1","type":"charge.succeeded","charge_id":"ch_1","order_id":"0192a5b0-c3d4-7e6f-8a9b-0c1d2e3f4a5b","amount":-1,"currency":"EUR","created":1}"#.into(),
    ];
    let variants: [fn(&mut WebhookEvent); 8] = [
        |e| e.id.clear(),
        |e| e.charge_id.clear(),
        |e| e.amount = 0,
        |e| e.currency = "eur".into(),
        |e| e.failure_reason = Some(DeclineReason::CardDeclined),
        |e| e.refund_id = Some("re_1".into()),
        |e| e.refund_reason = Some(RefundReason::Duplicate),
        |e| {
            e.kind = WebhookEventType::ChargeFailed;
        },
    ];
    for variant in variants {
        let mut e = event(WebhookEventType::ChargeSucceeded);
        variant(&mut e);
        bad_bodies.push(serde_json::to_string(&e).unwrap());
    }
    let mut empty_refund_id = event(WebhookEventType::RefundSucceeded);
    empty_refund_id.refund_id = Some(String::new());
    bad_bodies.push(serde_json::to_string(&empty_refund_id).unwrap());

    let now = unix_now();
    for body in bad_bodies {
        let header = signed(body.as_bytes(), now);
        let err = parse_webhook(&[SECRET], &header, body.as_bytes(), now, TOLERANCE).unwrap_err();
        assert!(
            matches!(err, WebhookError::InvalidPayload(_)),
            "{body}: {err:?}"
        );
        assert_eq!(err.code(), "WEBHOOK_INVALID_PAYLOAD");
    }
}

#[test]
fn refuses_an_oversized_body_before_any_work() {
    let body = vec![b' '; MAX_WEBHOOK_BODY_BYTES + 1];
    let now = unix_now();
    let err = parse_webhook(&[SECRET], &signed(&body, now), &body, now, TOLERANCE).unwrap_err();
    assert_eq!(err.code(), "WEBHOOK_TOO_LARGE");
}

#[test]
fn the_replay_guard_refuses_an_id_seen_before() {
    let guard = ReplayGuard::new(8);
    assert!(guard.first_time("evt_1"));
    assert!(!guard.first_time("evt_1"));
    assert!(guard.first_time("evt_2"));
    guard.forget("evt_1");
    assert!(guard.first_time("evt_1"));
    assert_eq!(guard.len(), 2);
}

#[test]
fn the_replay_guard_forgets_the_oldest_when_full() {
    let guard = ReplayGuard::new(2);
    assert!(guard.first_time("a"));
    assert!(guard.first_time("b"));
    assert!(guard.first_time("c"));
    assert_eq!(guard.len(), 2);
    assert!(!guard.first_time("b"));
    assert!(!guard.first_time("c"));
    assert!(guard.first_time("a"), "the oldest id was forgotten");
}

#[test]
fn concurrent_redeliveries_of_one_event_are_accepted_once() {
    let guard = std::sync::Arc::new(ReplayGuard::new(1024));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (guard, barrier) = (guard.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..200)
                    .filter(|i| guard.first_time(&format!("evt_{i}")))
                    .count()
            })
        })
        .collect();
    let accepted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        accepted, 200,
        "each of the 200 events accepted exactly once"
    );
}

proptest! {
    #[test]
    fn the_replay_guard_stays_bounded_and_remembers_the_latest(
        capacity in 1usize..32,
        ids in proptest::collection::vec(0u16..64, 0..300),
    ) {
        let guard = ReplayGuard::new(capacity);
        let mut window: std::collections::VecDeque<u16> = Default::default();
        for id in ids {
            let first = guard.first_time(&id.to_string());
            prop_assert_eq!(first, !window.contains(&id));
            if first {
                if window.len() == capacity {
                    window.pop_front();
                }
                window.push_back(id);
            }
            prop_assert!(guard.len() <= capacity);
            prop_assert_eq!(guard.len(), window.len());
        }
    }

    #[test]
    fn parse_webhook_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let now = unix_now();
        let _ = parse_webhook(&[SECRET], &signed(&body, now), &body, now, TOLERANCE);
    }
}
