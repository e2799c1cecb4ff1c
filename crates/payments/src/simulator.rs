//! A simulated payment provider: deterministic outcomes chosen by test tokens, with its
//! books in memory or in a durable ledger file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::delivery::{WebhookDelivery, WebhookSink};
use crate::journal::{Answer, Inserted, Journal, JournalWriter, LedgerError, StoredCharge};
use crate::port::{
    ChargeOutcome, ChargeRequest, DeclineReason, ListedCharge, ListedChargeStatus, PaymentError,
    PaymentPort, RefundOutcome, RefundReason, RefundRequest,
};
use crate::webhook::{WebhookEvent, WebhookEventType};

/// The payment tokens the simulated provider understands. Any other token is refused with
/// [`PaymentError::InvalidInput`] on the `token` field.
pub mod test_tokens {
    /// Succeeds at once.
    pub const SUCCESS: &str = "tok_success";
    /// Declined at once: `card_declined`.
    pub const DECLINE: &str = "tok_decline";
    /// Declined at once: `insufficient_funds`.
    pub const INSUFFICIENT_FUNDS: &str = "tok_insufficient_funds";
    /// Declined at once: `expired_card`.
    pub const EXPIRED_CARD: &str = "tok_expired_card";
    /// Never answers: the charge future stays pending, so the caller's timeout decides. No
    /// money moves.
    pub const TIMEOUT: &str = "tok_timeout";
    /// Answers `Pending` at once; after the configured delay the money is taken and a
    /// `charge.succeeded` webhook is delivered.
    pub const WEBHOOK_SUCCESS: &str = "tok_webhook_success";
    /// Answers `Pending` at once; after the configured delay a `charge.failed` webhook
    /// (`card_declined`) is delivered.
    pub const WEBHOOK_DECLINE: &str = "tok_webhook_decline";

    /// Every token above.
    pub const ALL: [&str; 7] = [
        SUCCESS,
        DECLINE,
        INSUFFICIENT_FUNDS,
        EXPIRED_CARD,
        TIMEOUT,
        WEBHOOK_SUCCESS,
        WEBHOOK_DECLINE,
    ];
}

/// What a token makes the simulated provider do.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Succeed,
    Decline(DeclineReason),
    NeverAnswer,
    /// Answer `Pending`, then settle by webhook: success, or a decline with this reason.
    Later(Option<DeclineReason>),
}

fn behaviour(token: &str) -> Result<Behaviour, PaymentError> {
    use test_tokens::*;
    Ok(match token {
        SUCCESS => Behaviour::Succeed,
        DECLINE => Behaviour::Decline(DeclineReason::CardDeclined),
        INSUFFICIENT_FUNDS => Behaviour::Decline(DeclineReason::InsufficientFunds),
        EXPIRED_CARD => Behaviour::Decline(DeclineReason::ExpiredCard),
        TIMEOUT => Behaviour::NeverAnswer,
        WEBHOOK_SUCCESS => Behaviour::Later(None),
        WEBHOOK_DECLINE => Behaviour::Later(Some(DeclineReason::CardDeclined)),
        _ => {
            return Err(PaymentError::invalid(
                "token",
                format!(
                    "unknown payment token; the simulated provider accepts {}",
                    test_tokens::ALL.join(", ")
                ),
            ));
        }
    })
}

/// How the simulated provider behaves.
#[derive(Clone)]
pub struct SimulatorConfig {
    /// Signs every webhook (`signature::sign`); the receiver verifies with the same secret.
    pub webhook_secret: Vec<u8>,
    /// How long a `Pending` charge takes to settle and send its webhook.
    pub webhook_delay: Duration,
    /// How long every charge takes before it answers, so tests can overlap calls.
    pub processing_delay: Duration,
}

impl std::fmt::Debug for SimulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorConfig")
            .field("webhook_secret", &"<redacted>")
            .field("webhook_delay", &self.webhook_delay)
            .field("processing_delay", &self.processing_delay)
            .finish()
    }
}

impl SimulatorConfig {
    /// Webhooks signed with `webhook_secret` and settled after 2 s; charges answer at once.
    pub fn new(webhook_secret: impl Into<Vec<u8>>) -> Self {
        Self {
            webhook_secret: webhook_secret.into(),
            webhook_delay: Duration::from_secs(2),
            processing_delay: Duration::ZERO,
        }
    }
}

/// Where a charge stands in the simulated provider's books.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    /// Answered `Pending`; the webhook has not been sent yet.
    Pending,
    /// The money was taken.
    Succeeded,
    /// Refused; no money moved.
    Declined(DeclineReason),
}

impl ChargeStatus {
    fn name(self) -> &'static str {
        match self {
            ChargeStatus::Pending => "pending",
            ChargeStatus::Succeeded => "succeeded",
            ChargeStatus::Declined(_) => "declined",
        }
    }
}

/// One charge attempt that got an answer (a `tok_timeout` charge never does, so it is not
/// recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRecord {
    /// The provider's id of the charge.
    pub charge_id: String,
    /// The order charged.
    pub order_id: Uuid,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// The token used.
    pub token: String,
    /// Where it stands now.
    pub status: ChargeStatus,
}

/// One refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecord {
    /// The provider's id of the refund.
    pub refund_id: String,
    /// The charge refunded.
    pub charge_id: String,
    /// The order the charge paid for.
    pub order_id: Uuid,
    /// Amount given back in minor units: the whole charge.
    pub amount_minor: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// Why.
    pub reason: RefundReason,
}

/// The simulated provider's books: every charge and refund, in the order they were made.
///
/// A copy of what the provider holds in memory; a provider opened on a ledger file
/// ([`SimulatedProvider::open`]) also keeps every entry in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Every answered charge attempt.
    pub charges: Vec<ChargeRecord>,
    /// Every refund.
    pub refunds: Vec<RefundRecord>,
}

impl Ledger {
    /// The charges made for `order_id`.
    pub fn charges_for(&self, order_id: Uuid) -> Vec<&ChargeRecord> {
        self.charges
            .iter()
            .filter(|c| c.order_id == order_id)
            .collect()
    }

    /// The refunds made for `order_id`.
    pub fn refunds_for(&self, order_id: Uuid) -> Vec<&RefundRecord> {
        self.refunds
            .iter()
            .filter(|r| r.order_id == order_id)
            .collect()
    }

    /// Money taken for `order_id`, in minor units, refunds not deducted.
    pub fn captured_minor(&self, order_id: Uuid) -> u64 {
        self.charges_for(order_id)
            .iter()
            .filter(|c| c.status == ChargeStatus::Succeeded)
            .map(|c| c.amount_minor)
            .sum()
    }

    /// Money given back for `order_id`, in minor units.
    pub fn refunded_minor(&self, order_id: Uuid) -> u64 {
        self.refunds_for(order_id)
            .iter()
            .map(|r| r.amount_minor)
            .sum()
    }
}

/// The ledger with indexes, so that settling or refunding a charge does not scan every
/// charge ever made (a load test makes hundreds of thousands).
#[derive(Default)]
pub(crate) struct Books {
    /// What [`SimulatedProvider::ledger`] copies out.
    ledger: Ledger,
    /// Position of each charge in `ledger.charges`.
    charge_at: HashMap<String, usize>,
    /// Position of each charge's refund in `ledger.refunds`.
    refund_at: HashMap<String, usize>,
}

impl Books {
    pub(crate) fn add_charge(&mut self, record: ChargeRecord) {
        self.charge_at
            .insert(record.charge_id.clone(), self.ledger.charges.len());
        self.ledger.charges.push(record);
    }

    pub(crate) fn charge_mut(&mut self, charge_id: &str) -> Option<&mut ChargeRecord> {
        let at = *self.charge_at.get(charge_id)?;
        self.ledger.charges.get_mut(at)
    }

    pub(crate) fn charge(&self, charge_id: &str) -> Option<&ChargeRecord> {
        let at = *self.charge_at.get(charge_id)?;
        self.ledger.charges.get(at)
    }

    pub(crate) fn refund_of(&self, charge_id: &str) -> Option<&RefundRecord> {
        let at = *self.refund_at.get(charge_id)?;
        self.ledger.refunds.get(at)
    }

    pub(crate) fn add_refund(&mut self, record: RefundRecord) {
        self.refund_at
            .insert(record.charge_id.clone(), self.ledger.refunds.len());
        self.ledger.refunds.push(record);
    }
}

/// A payment provider that decides by token, keeps its books and sends signed webhooks
/// through a [`WebhookSink`]. Cheap to clone; clones share the books.
///
/// [`SimulatedProvider::new`] keeps the books in memory only (tests, benchmarks, load
/// tests): a restart forgets every charge. [`SimulatedProvider::open`] also keeps them in
/// a ledger file, as a real provider keeps its idempotency keys: reopened after a crash,
/// it answers a retried charge or refund with the first answer and charges nothing again.
///
/// Must be used inside a Tokio runtime: pending charges settle on spawned tasks, and only
/// while the provider is alive (a provider reopened on the same ledger settles what was
/// left pending). Its memory grows with every order charged (a slot and a ledger entry
/// each, a few hundred bytes): fine for tests and load tests, not for a provider that runs
/// for ever.
#[derive(Clone)]
pub struct SimulatedProvider {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tokens' timing and the webhook secret.
    config: SimulatorConfig,
    /// Signs and sends webhooks; cloned into the tasks that deliver them, so a slow
    /// delivery does not keep the provider (and its ledger file) alive.
    webhooks: Webhooks,
    /// One slot per order ever charged: the request that claimed it (to detect a retry
    /// with other parameters) and the first outcome, which every later call returns. The
    /// cell also makes concurrent calls wait for the one in flight instead of charging.
    orders: Mutex<HashMap<Uuid, OrderSlot>>,
    /// The books in memory (with a ledger file, its writer makes the entries).
    books: Arc<Mutex<Books>>,
    /// The ledger file every entry is written to before it is answered (through its
    /// writer thread, which commits many at once); `None` for a provider whose books live
    /// in memory only.
    journal: Option<JournalWriter>,
    /// One cell per charge being refunded: concurrent refunds of a charge wait for the one
    /// in flight, so a charge is refunded once.
    refunding: Mutex<HashMap<String, Arc<OnceCell<RefundRecord>>>>,
}

struct OrderSlot {
    /// The request that claimed the order; a retry must repeat it exactly.
    request: ChargeRequest,
    /// Set once, by the first call that gets an answer; shared so that callers can wait on
    /// it without holding the `orders` lock.
    outcome: Arc<OnceCell<ChargeOutcome>>,
}

impl std::fmt::Debug for SimulatedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedProvider")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl SimulatedProvider {
    /// A provider with empty books, kept in memory only, that sends its webhooks to `sink`.
    pub fn new(config: SimulatorConfig, sink: Arc<dyn WebhookSink>) -> Self {
        Self::with_books(
            config,
            sink,
            Arc::new(Mutex::new(Books::default())),
            HashMap::new(),
            None,
        )
    }

    /// A provider whose books are kept in the ledger file at `path` (created when absent),
    /// starting from everything already in it: a charge or refund made before is answered
    /// again, never made twice, and a charge left pending settles after the webhook delay.
    ///
    /// Refuses a file that is not a ledger, was written by another schema version, or is
    /// damaged. Blocks while it reads the file; call it at start, inside a Tokio runtime.
    pub fn open(
        config: SimulatorConfig,
        sink: Arc<dyn WebhookSink>,
        path: impl AsRef<Path>,
    ) -> Result<Self, LedgerError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(LedgerError::NoRuntime);
        }
        let (journal, charges, refunds) = Journal::open(path.as_ref())?;
        let mut books = Books::default();
        let mut orders = HashMap::with_capacity(charges.len());
        let mut pending = Vec::new();
        for stored in charges {
            let request = stored.request();
            if stored.record.status == ChargeStatus::Pending {
                // Checked when loaded: a pending charge's token settles later.
                if let Ok(Behaviour::Later(settlement)) = behaviour(&request.token) {
                    pending.push((stored.record.charge_id.clone(), settlement));
                }
            }
            orders.insert(
                request.order_id,
                OrderSlot {
                    outcome: Arc::new(OnceCell::new_with(Some(stored.outcome()))),
                    request,
                },
            );
            books.add_charge(stored.record);
        }
        for refund in refunds {
            books.add_refund(refund);
        }
        let books = Arc::new(Mutex::new(books));
        let journal = JournalWriter::spawn(journal, Arc::clone(&books));
        let provider = Self::with_books(config, sink, books, orders, Some(journal));
        if !pending.is_empty() {
            tracing::info!(
                charges = pending.len(),
                "payment ledger: resuming the settlement of pending charges"
            );
        }
        for (charge_id, settlement) in pending {
            provider.inner.spawn_settlement(charge_id, settlement);
        }
        Ok(provider)
    }

    fn with_books(
        config: SimulatorConfig,
        sink: Arc<dyn WebhookSink>,
        books: Arc<Mutex<Books>>,
        orders: HashMap<Uuid, OrderSlot>,
        journal: Option<JournalWriter>,
    ) -> Self {
        let webhooks = Webhooks {
            sink,
            secret: config.webhook_secret.clone().into(),
        };
        Self {
            inner: Arc::new(Inner {
                config,
                webhooks,
                orders: Mutex::new(orders),
                books,
                journal,
                refunding: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A copy of the books as they are now.
    pub fn ledger(&self) -> Ledger {
        self.inner.books.lock().ledger.clone()
    }
}

#[async_trait]
impl PaymentPort for SimulatedProvider {
    async fn charge(&self, request: ChargeRequest) -> Result<ChargeOutcome, PaymentError> {
        request.validate()?;
        let behaviour = behaviour(&request.token)?;
        let cell = {
            let mut orders = self.inner.orders.lock();
            let slot = orders.entry(request.order_id).or_insert_with(|| OrderSlot {
                request: request.clone(),
                outcome: Arc::new(OnceCell::new()),
            });
            if slot.request != request {
                return Err(PaymentError::IdempotencyConflict {
                    order_id: request.order_id,
                });
            }
            slot.outcome.clone()
        };
        // If the caller in flight gives up (its future is dropped) before the answer, the
        // next waiter runs the charge instead: nothing was recorded before the answer.
        let outcome = cell
            .get_or_try_init(|| Inner::execute(&self.inner, request, behaviour))
            .await?;
        Ok(outcome.clone())
    }

    async fn list_charges(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedCharge>, PaymentError> {
        // The cursor is a position in the books, which only ever grow at their end.
        let start = match after {
            None => 0,
            Some(cursor) => {
                cursor
                    .parse::<usize>()
                    .map_err(|_| PaymentError::invalid("after", "not a cursor of this listing"))?
                    + 1
            }
        };
        let books = self.inner.books.lock();
        Ok(books
            .ledger
            .charges
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(at, c)| ListedCharge {
                cursor: at.to_string(),
                charge_id: c.charge_id.clone(),
                order_id: c.order_id,
                amount_minor: c.amount_minor,
                currency: c.currency.clone(),
                status: match c.status {
                    ChargeStatus::Pending => ListedChargeStatus::Pending,
                    ChargeStatus::Succeeded => ListedChargeStatus::Succeeded,
                    ChargeStatus::Declined(_) => ListedChargeStatus::Declined,
                },
            })
            .collect())
    }

    async fn refund(&self, request: RefundRequest) -> Result<RefundOutcome, PaymentError> {
        let (candidate, cell) = {
            let books = self.inner.books.lock();
            let charge =
                books
                    .charge(&request.charge_id)
                    .ok_or_else(|| PaymentError::UnknownCharge {
                        charge_id: request.charge_id.clone(),
                    })?;
            if charge.order_id != request.order_id {
                return Err(PaymentError::invalid(
                    "order_id",
                    "the charge did not pay for this order",
                ));
            }
            if charge.status != ChargeStatus::Succeeded {
                return Err(PaymentError::NotRefundable {
                    charge_id: request.charge_id,
                    status: charge.status.name(),
                });
            }
            if let Some(done) = books.refund_of(&request.charge_id) {
                return Ok(refund_outcome(done));
            }
            let candidate = RefundRecord {
                refund_id: new_id("re"),
                charge_id: charge.charge_id.clone(),
                order_id: charge.order_id,
                amount_minor: charge.amount_minor,
                currency: charge.currency.clone(),
                reason: request.reason,
            };
            let cell = self
                .inner
                .refunding
                .lock()
                .entry(request.charge_id.clone())
                .or_default()
                .clone();
            (candidate, cell)
        };
        // The call that makes the refund sends its webhook; others answer with it.
        let made_here = std::sync::atomic::AtomicBool::new(false);
        let record = cell
            .get_or_try_init(|| async {
                let record = match &self.inner.journal {
                    None => candidate,
                    Some(journal) => match journal
                        .insert_refund(candidate.clone())
                        .await
                        .map_err(unavailable)?
                    {
                        Inserted::New => {
                            made_here.store(true, std::sync::atomic::Ordering::Relaxed);
                            candidate
                        }
                        // Another provider on the same ledger refunded it first.
                        Inserted::Existing(first) => first,
                    },
                };
                if self.inner.journal.is_none() {
                    made_here.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.inner.books.lock().add_refund(record.clone());
                }
                Ok::<_, PaymentError>(record)
            })
            .await?
            .clone();
        self.inner.refunding.lock().remove(&record.charge_id);
        let outcome = refund_outcome(&record);
        if !made_here.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(outcome);
        }
        let event = WebhookEvent {
            id: new_id("evt"),
            kind: WebhookEventType::RefundSucceeded,
            charge_id: record.charge_id,
            order_id: record.order_id,
            amount: record.amount_minor,
            currency: record.currency,
            created: unix_now(),
            failure_reason: None,
            refund_id: Some(record.refund_id),
            refund_reason: Some(record.reason),
        };
        let webhooks = self.inner.webhooks.clone();
        tokio::spawn(async move { webhooks.send(event).await });
        Ok(outcome)
    }
}

fn unavailable(error: crate::journal::WriteError) -> PaymentError {
    PaymentError::Unavailable(error.0)
}

impl StoredCharge {
    /// The request that made this charge, which a retry must repeat.
    fn request(&self) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: self.idempotency_key.clone(),
            order_id: self.record.order_id,
            amount_minor: self.record.amount_minor,
            currency: self.record.currency.clone(),
            token: self.record.token.clone(),
        }
    }
}

/// Whether a charge read from a ledger is one this provider could have made: a valid
/// request, answered as its token answers.
pub(crate) fn check_stored(stored: &StoredCharge) -> Result<(), String> {
    stored
        .request()
        .validate()
        .map_err(|error| error.to_string())?;
    let behaviour = behaviour(&stored.record.token).map_err(|error| error.to_string())?;
    let status = stored.record.status;
    let consistent = match behaviour {
        Behaviour::Succeed => stored.answer == Answer::Succeeded,
        Behaviour::Decline(reason) => {
            stored.answer == Answer::Declined && status == ChargeStatus::Declined(reason)
        }
        Behaviour::Later(None) => {
            stored.answer == Answer::Pending
                && matches!(status, ChargeStatus::Pending | ChargeStatus::Succeeded)
        }
        Behaviour::Later(Some(reason)) => {
            stored.answer == Answer::Pending
                && (status == ChargeStatus::Pending || status == ChargeStatus::Declined(reason))
        }
        Behaviour::NeverAnswer => false,
    };
    if consistent {
        Ok(())
    } else {
        Err(format!(
            "token {:?} never answers {:?} with the charge standing {}",
            stored.record.token,
            stored.answer,
            status.name()
        ))
    }
}

fn refund_outcome(record: &RefundRecord) -> RefundOutcome {
    RefundOutcome::Succeeded {
        refund_id: record.refund_id.clone(),
        amount_minor: record.amount_minor,
        currency: record.currency.clone(),
    }
}

impl Inner {
    /// Runs one charge to its answer. Nothing is recorded before the last await, so a
    /// dropped call leaves no trace. With a ledger file the charge is written before it is
    /// answered; if it cannot be, nothing is answered and the next call tries again.
    async fn execute(
        self: &Arc<Self>,
        request: ChargeRequest,
        behaviour: Behaviour,
    ) -> Result<ChargeOutcome, PaymentError> {
        if !self.config.processing_delay.is_zero() {
            tokio::time::sleep(self.config.processing_delay).await;
        }
        let charge_id = new_id("ch");
        let (status, outcome) = match behaviour {
            Behaviour::NeverAnswer => return std::future::pending().await,
            Behaviour::Succeed => (
                ChargeStatus::Succeeded,
                ChargeOutcome::Succeeded {
                    charge_id: charge_id.clone(),
                },
            ),
            Behaviour::Decline(reason) => (
                ChargeStatus::Declined(reason),
                ChargeOutcome::Declined { reason },
            ),
            Behaviour::Later(_) => (
                ChargeStatus::Pending,
                ChargeOutcome::Pending {
                    charge_id: charge_id.clone(),
                },
            ),
        };
        let idempotency_key = request.idempotency_key;
        let record = ChargeRecord {
            charge_id: charge_id.clone(),
            order_id: request.order_id,
            amount_minor: request.amount_minor,
            currency: request.currency,
            token: request.token,
            status,
        };
        match &self.journal {
            // The writer enters the charge in the books once it is in the file.
            Some(journal) => {
                let inserted = journal
                    .insert_charge(
                        record.clone(),
                        idempotency_key.clone(),
                        Answer::of(&outcome),
                    )
                    .await
                    .map_err(unavailable)?;
                if let Inserted::Existing(first) = inserted {
                    // Another provider on the same ledger charged this order first: its
                    // charge stands, and settles there.
                    let mut books = self.books.lock();
                    return answer_existing(&mut books, first, &record, &idempotency_key);
                }
            }
            None => self.books.lock().add_charge(record),
        }
        // Spawned only once the charge is in the books, where the settlement looks for it.
        if let Behaviour::Later(settlement) = behaviour {
            self.spawn_settlement(charge_id, settlement);
        }
        Ok(outcome)
    }

    /// Settles a pending charge after the webhook delay, unless the provider is gone by
    /// then (a provider reopened on its ledger settles it instead).
    fn spawn_settlement(self: &Arc<Self>, charge_id: String, decline: Option<DeclineReason>) {
        let inner = Arc::downgrade(self);
        let delay = self.config.webhook_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            settle(inner, charge_id, decline).await;
        });
    }
}

/// The answer to a charge whose order another provider on the same ledger charged first.
fn answer_existing(
    books: &mut Books,
    first: StoredCharge,
    attempted: &ChargeRecord,
    idempotency_key: &str,
) -> Result<ChargeOutcome, PaymentError> {
    let same = first.idempotency_key == idempotency_key
        && (
            first.record.amount_minor,
            &first.record.currency,
            &first.record.token,
        ) == (
            attempted.amount_minor,
            &attempted.currency,
            &attempted.token,
        );
    let outcome = first.outcome();
    if books.charge(&first.record.charge_id).is_none() {
        books.add_charge(first.record);
    }
    if same {
        Ok(outcome)
    } else {
        Err(PaymentError::IdempotencyConflict {
            order_id: attempted.order_id,
        })
    }
}

/// Settles a pending charge and reports it by webhook.
async fn settle(inner: Weak<Inner>, charge_id: String, decline: Option<DeclineReason>) {
    let status = match decline {
        None => ChargeStatus::Succeeded,
        Some(reason) => ChargeStatus::Declined(reason),
    };
    // A provider that is gone (a crash) settles nothing: the one reopened on the file does.
    let Some(inner) = inner.upgrade() else {
        return;
    };
    if let Some(journal) = &inner.journal
        && journal
            .settle_charge(charge_id.clone(), status)
            .await
            .is_err()
    {
        // Logged by the ledger; the charge stays pending in memory and in the file,
        // where a reopened provider finds it and settles it.
        return;
    }
    let event = {
        let mut books = inner.books.lock();
        let Some(charge) = books.charge_mut(&charge_id) else {
            // Recorded before this task was spawned, and never removed.
            tracing::error!(%charge_id, "pending charge missing from the ledger");
            return;
        };
        if inner.journal.is_none() {
            charge.status = status;
        }
        WebhookEvent {
            id: new_id("evt"),
            kind: match decline {
                None => WebhookEventType::ChargeSucceeded,
                Some(_) => WebhookEventType::ChargeFailed,
            },
            charge_id: charge.charge_id.clone(),
            order_id: charge.order_id,
            amount: charge.amount_minor,
            currency: charge.currency.clone(),
            created: unix_now(),
            failure_reason: decline,
            refund_id: None,
            refund_reason: None,
        }
    };
    let webhooks = inner.webhooks.clone();
    // Delivery may retry for seconds; it does not need the provider.
    drop(inner);
    webhooks.send(event).await;
}

/// Where webhooks go and the secret that signs them.
#[derive(Clone)]
struct Webhooks {
    /// The receiver (a channel in tests, the API's webhook route over HTTP).
    sink: Arc<dyn WebhookSink>,
    /// Signs every delivery; a copy of the configuration's.
    secret: Arc<[u8]>,
}

impl Webhooks {
    /// Signs and delivers one webhook; a delivery that finally fails is logged.
    async fn send(&self, event: WebhookEvent) {
        let body = match serde_json::to_vec(&event) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "cannot serialise a payment webhook");
                return;
            }
        };
        let signature_header = signature::sign(&self.secret, unix_now(), &body);
        let delivery = WebhookDelivery {
            event,
            body,
            signature_header,
        };
        if let Err(error) = self.sink.deliver(&delivery).await {
            tracing::warn!(
                event_id = %delivery.event.id,
                kind = delivery.event.kind.as_str(),
                %error,
                "payment webhook not delivered"
            );
        }
    }
}

/// A fresh provider id: time-ordered (UUIDv7), so that the ledger's unique indexes on
/// charge and refund ids grow at their right edge instead of dirtying a random page for
/// every row (about one 4 KiB log frame per charge saved).
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
