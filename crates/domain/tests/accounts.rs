//! Given/when/then tests for user accounts and email reservations.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use domain::account::*;
use domain::ids::Email;
use domain::testing::given;
use domain::*;
use uuid::Uuid;

const ALICE: UserId = UserId(Uuid::from_u128(0xA11CE));
const BOB: UserId = UserId(Uuid::from_u128(0xB0B));
const ROOT: UserId = UserId(Uuid::from_u128(0x1));

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn cmd<C>(actor: Actor, key: &str, body: C) -> Command<C> {
    Command::new(
        CommandMeta {
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            actor,
            now: now(),
            correlation_id: Uuid::nil(),
        },
        body,
    )
}

fn admin() -> Actor {
    Actor::user(ROOT, [Role::Admin])
}

fn alice() -> Actor {
    Actor::user(ALICE, [Role::Customer])
}

fn register(roles: Vec<Role>) -> AccountCommand {
    AccountCommand::Register {
        user_id: ALICE,
        email: " Alice@Example.com ".into(),
        display_name: "Alice".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles,
    }
}

fn registered(roles: &[Role]) -> AccountEvent {
    AccountEvent::AccountRegistered(AccountRegistered {
        user_id: ALICE,
        email: Email::parse("alice@example.com").unwrap(),
        display_name: "Alice".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles: roles.iter().copied().collect(),
        at: now(),
    })
}

#[test]
fn anyone_registers_as_a_customer_with_a_normalised_email() {
    let (outcome, state) = given::<Account>([])
        .when(cmd(Actor::Anonymous, "k", register(vec![])))
        .then(vec![registered(&[Role::Customer])]);
    assert_eq!(
        outcome,
        AccountOutcome::Registered {
            user_id: ALICE,
            roles: BTreeSet::from([Role::Customer]),
        }
    );
    assert_eq!(state.email().unwrap().as_str(), "alice@example.com");
}

#[test]
fn self_registration_cannot_claim_privileged_roles() {
    for role in [Role::Admin, Role::Organizer, Role::Operator] {
        given::<Account>([])
            .when(cmd(Actor::Anonymous, "k", register(vec![role])))
            .rejected("FORBIDDEN");
    }
    given::<Account>([])
        .when(cmd(
            Actor::user(BOB, [Role::Customer]),
            "k",
            register(vec![]),
        ))
        .rejected("FORBIDDEN");
}

#[test]
fn the_platform_bootstraps_the_first_admin_and_admins_register_anyone() {
    given::<Account>([])
        .when(cmd(Actor::System, "bootstrap", register(vec![Role::Admin])))
        .then(vec![registered(&[Role::Admin])]);
    given::<Account>([])
        .when(cmd(
            admin(),
            "k",
            register(vec![Role::Organizer, Role::Customer]),
        ))
        .then(vec![registered(&[Role::Organizer, Role::Customer])]);
}

#[test]
fn an_account_is_registered_once() {
    given::<Account>([registered(&[Role::Customer])])
        .when(cmd(Actor::Anonymous, "k2", register(vec![])))
        .rejected("ALREADY_EXISTS");
}

#[test]
fn registration_input_is_validated() {
    let with = |email: &str, name: &str, hash: &str| AccountCommand::Register {
        user_id: ALICE,
        email: email.into(),
        display_name: name.into(),
        password_hash: hash.into(),
        roles: vec![],
    };
    for (email, name, hash) in [
        ("not-an-email", "Alice", "h"),
        ("a@b.c", "", "h"),
        ("a@b.c", &"x".repeat(101), "h"),
        ("a@b.c", "Alice", ""),
        ("a@b.c", "Alice", "has space"),
        ("a@b.c", "Al\u{0}ice", "h"),
    ] {
        given::<Account>([])
            .when(cmd(Actor::Anonymous, "k", with(email, name, hash)))
            .rejected("INVALID_INPUT");
    }
}

#[test]
fn the_user_or_an_admin_updates_the_profile() {
    let update = || AccountCommand::UpdateProfile {
        display_name: Some(" Alice B ".into()),
        password_hash: None,
    };
    let (_, state) = given::<Account>([registered(&[Role::Customer])])
        .when(cmd(alice(), "k", update()))
        .then(vec![AccountEvent::ProfileUpdated(ProfileUpdated {
            display_name: "Alice B".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            at: now(),
        })]);
    assert_eq!(state.display_name(), Some("Alice B"));
    given::<Account>([registered(&[Role::Customer])])
        .when(cmd(admin(), "k", update()))
        .accepted();
    given::<Account>([registered(&[Role::Customer])])
        .when(cmd(Actor::user(BOB, [Role::Customer]), "k", update()))
        .rejected("FORBIDDEN");
    given::<Account>([registered(&[Role::Customer])])
        .when(cmd(
            alice(),
            "k",
            AccountCommand::UpdateProfile {
                display_name: None,
                password_hash: None,
            },
        ))
        .rejected("INVALID_INPUT");
    given::<Account>([])
        .when(cmd(alice(), "k", update()))
        .rejected("NOT_FOUND");
}

#[test]
fn only_admins_grant_and_revoke_roles() {
    let grant = |role| AccountCommand::GrantRole { role };
    let (_, state) = given::<Account>([registered(&[Role::Customer])])
        .when(cmd(admin(), "k", grant(Role::Organizer)))
        .then(vec![AccountEvent::RoleGranted(RoleChanged {
            role: Role::Organizer,
            by: ActorRef::User(ROOT),
            at: now(),
        })]);
    assert!(state.roles().contains(&Role::Organizer));
    given::<Account>([registered(&[Role::Customer])])
        .when(cmd(alice(), "k", grant(Role::Admin)))
        .rejected("FORBIDDEN");
    given::<Account>([registered(&[Role::Customer])])
        .when(cmd(
            Actor::user(BOB, [Role::Organizer]),
            "k",
            grant(Role::Operator),
        ))
        .rejected("FORBIDDEN");
    given::<Account>([registered(&[Role::Customer])])
        .when(cmd(admin(), "k", grant(Role::Customer)))
        .rejected("INVALID_STATE");
    given::<Account>([registered(&[Role::Customer, Role::Operator])])
        .when(cmd(
            admin(),
            "k",
            AccountCommand::RevokeRole {
                role: Role::Operator,
            },
        ))
        .accepted();
    given::<Account>([registered(&[Role::Customer])])
        .when(cmd(
            admin(),
            "k",
            AccountCommand::RevokeRole {
                role: Role::Operator,
            },
        ))
        .rejected("INVALID_STATE");
    given::<Account>([registered(&[Role::Customer])])
        .when(cmd(
            admin(),
            "k",
            AccountCommand::RevokeRole {
                role: Role::Customer,
            },
        ))
        .rejected("INVALID_STATE");
}

#[test]
fn an_admin_cannot_revoke_their_own_admin_role() {
    let me = AccountEvent::AccountRegistered(AccountRegistered {
        user_id: ROOT,
        email: Email::parse("root@example.com").unwrap(),
        display_name: "Root".into(),
        password_hash: "h".into(),
        roles: BTreeSet::from([Role::Admin, Role::Customer]),
        at: now(),
    });
    given::<Account>([me])
        .when(cmd(
            admin(),
            "k",
            AccountCommand::RevokeRole { role: Role::Admin },
        ))
        .rejected("INVALID_STATE");
}

#[test]
fn an_account_retry_answers_the_same_and_a_reused_key_is_refused() {
    let (events, outcome, _) = given::<Account>([])
        .when(cmd(Actor::Anonymous, "signup", register(vec![])))
        .accepted();
    let state = Account::replay(&events);
    let again = state
        .decide(&cmd(Actor::Anonymous, "signup", register(vec![])))
        .unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.outcome, outcome);
    let r = state
        .decide(&cmd(
            Actor::Anonymous,
            "signup",
            AccountCommand::UpdateProfile {
                display_name: Some("x".into()),
                password_hash: None,
            },
        ))
        .unwrap_err();
    assert_eq!(r.code(), "INVALID_INPUT");
}

// ------------------------------------------------------------------ email reservations

fn reserve(email: &str, user: UserId) -> EmailCommand {
    EmailCommand::Reserve {
        email: email.into(),
        user_id: user,
    }
}

fn reserved(user: UserId) -> EmailEvent {
    EmailEvent::EmailReserved(EmailReservationChanged {
        email: Email::parse("alice@example.com").unwrap(),
        user_id: user,
        at: now(),
    })
}

#[test]
fn an_email_is_reserved_for_one_user() {
    let (_, state) = given::<EmailReservation>([])
        .when(cmd(
            Actor::Anonymous,
            "k",
            reserve("ALICE@example.com", ALICE),
        ))
        .then(vec![reserved(ALICE)]);
    assert_eq!(state.holder(), Some(ALICE));
    let r = given::<EmailReservation>([reserved(ALICE)])
        .when(cmd(
            Actor::Anonymous,
            "k",
            reserve("alice@example.com", BOB),
        ))
        .rejected("EMAIL_TAKEN");
    assert!(r.to_string().contains("alice@example.com"), "{r}");
}

#[test]
fn reserving_again_for_the_same_user_succeeds_without_a_new_reservation() {
    given::<EmailReservation>([reserved(ALICE)])
        .when(cmd(
            Actor::Anonymous,
            "retry",
            reserve("alice@example.com", ALICE),
        ))
        .then(vec![]);
}

#[test]
fn a_released_email_can_be_taken_by_someone_else() {
    let (_, state) = given::<EmailReservation>([reserved(ALICE)])
        .when(cmd(
            Actor::System,
            "k",
            EmailCommand::Release { user_id: ALICE },
        ))
        .then(vec![EmailEvent::EmailReleased(EmailReservationChanged {
            email: Email::parse("alice@example.com").unwrap(),
            user_id: ALICE,
            at: now(),
        })]);
    assert_eq!(state.holder(), None);
    given::<EmailReservation>([
        reserved(ALICE),
        EmailEvent::EmailReleased(EmailReservationChanged {
            email: Email::parse("alice@example.com").unwrap(),
            user_id: ALICE,
            at: now(),
        }),
    ])
    .when(cmd(
        Actor::Anonymous,
        "k",
        reserve("alice@example.com", BOB),
    ))
    .then(vec![reserved(BOB)]);
}

#[test]
fn bad_reservations_and_releases_are_refused() {
    given::<EmailReservation>([])
        .when(cmd(Actor::Anonymous, "k", reserve("nope", ALICE)))
        .rejected("INVALID_INPUT");
    given::<EmailReservation>([reserved(ALICE)])
        .when(cmd(
            Actor::Anonymous,
            "k",
            reserve("other@example.com", ALICE),
        ))
        .rejected("INVALID_INPUT");
    given::<EmailReservation>([])
        .when(cmd(
            Actor::user(BOB, [Role::Customer]),
            "k",
            reserve("alice@example.com", ALICE),
        ))
        .rejected("FORBIDDEN");
    given::<EmailReservation>([reserved(ALICE)])
        .when(cmd(
            Actor::System,
            "k",
            EmailCommand::Release { user_id: BOB },
        ))
        .rejected("INVALID_STATE");
    given::<EmailReservation>([reserved(ALICE)])
        .when(cmd(
            Actor::user(BOB, [Role::Customer]),
            "k",
            EmailCommand::Release { user_id: ALICE },
        ))
        .rejected("FORBIDDEN");
}
