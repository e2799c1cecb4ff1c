//! Accounts on a real SQLite store: registration reserves the email first, emails stay
//! unique under concurrent registrations, retries register once.

mod common;

use std::sync::Arc;

use commands::{AccountService, Registration, RequestContext};
use domain::account::{AccountCommand, AccountOutcome};
use domain::aggregate::{Actor, Role};

use common::*;

fn registration(email: &str) -> Registration {
    Registration {
        email: email.into(),
        display_name: "Ada".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles: vec![],
    }
}

async fn accounts() -> (Harness, AccountService) {
    let h = harness().await;
    let service = AccountService::new(Arc::new(h.store.clone()), Arc::new(h.clock.clone()));
    (h, service)
}

#[tokio::test]
async fn register_then_find_by_email() {
    let (_h, accounts) = accounts().await;
    let receipt = accounts
        .register(&ctx(&Actor::Anonymous), registration("Ada@Example.com"))
        .await
        .expect("register");
    let AccountOutcome::Registered { user_id, roles } = receipt.outcome else {
        panic!("not registered")
    };
    assert!(roles.contains(&Role::Customer));
    assert_eq!(
        accounts
            .user_by_email("ada@example.com")
            .await
            .expect("lookup"),
        Some(user_id)
    );
    let account = accounts
        .account(user_id)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(account.display_name(), Some("Ada"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_email_register_once() {
    let (_h, accounts) = accounts().await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                accounts
                    .register(&ctx(&Actor::Anonymous), registration("race@example.com"))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), "EMAIL_TAKEN", "{e:?}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn a_retried_registration_registers_once() {
    let (_h, accounts) = accounts().await;
    let c = RequestContext::new(Actor::Anonymous, "signup-1");
    let first = accounts
        .register(&c, registration("once@example.com"))
        .await
        .expect("first");
    let again = accounts
        .register(&c, registration("once@example.com"))
        .await
        .expect("retry");
    assert_eq!(first.outcome, again.outcome);
}

#[tokio::test]
async fn a_refused_registration_gives_the_email_back() {
    let (_h, accounts) = accounts().await;
    let mut admin_wanted = registration("grab@example.com");
    admin_wanted.roles = vec![Role::Admin];
    let err = accounts
        .register(&ctx(&Actor::Anonymous), admin_wanted)
        .await
        .expect_err("anonymous cannot become admin");
    assert_eq!(err.code(), "FORBIDDEN");
    assert_eq!(
        accounts
            .user_by_email("grab@example.com")
            .await
            .expect("lookup"),
        None
    );
    accounts
        .register(&ctx(&Actor::Anonymous), registration("grab@example.com"))
        .await
        .expect("the email is free again");
}

#[tokio::test]
async fn roles_are_granted_by_the_platform() {
    let (_h, accounts) = accounts().await;
    let receipt = accounts
        .register(&ctx(&Actor::Anonymous), registration("door@example.com"))
        .await
        .expect("register");
    let AccountOutcome::Registered { user_id, .. } = receipt.outcome else {
        panic!("not registered")
    };
    let by_customer = accounts
        .execute(
            &ctx(&Actor::user(user_id, [Role::Customer])),
            user_id,
            AccountCommand::GrantRole {
                role: Role::Operator,
            },
        )
        .await
        .expect_err("customers cannot grant roles");
    assert_eq!(by_customer.code(), "FORBIDDEN");
    accounts
        .execute(
            &ctx(&Actor::System),
            user_id,
            AccountCommand::GrantRole {
                role: Role::Operator,
            },
        )
        .await
        .expect("platform grants");
    assert!(
        accounts
            .roles(user_id)
            .await
            .expect("roles")
            .contains(&Role::Operator)
    );
    let bad = accounts
        .register(&ctx(&Actor::Anonymous), registration("not an email"))
        .await
        .expect_err("bad email");
    assert_eq!(bad.code(), "INVALID_INPUT");
}
