//! [`CommandService`]: the command interface the rest of the system (GraphQL, webhooks,
//! tools) calls. It stamps commands (time, ids, secrets), routes them to the event's
//! inventory actor and orchestrates payments around it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::aggregate::{Actor, Command, CommandMeta, Role};
use domain::inventory::{
    DetailsInput, HoldRequest, Inventory, InventoryCommand, InventoryOutcome, OrderStatus,
    OrderView, PaymentInput, RefundReason, Selection, TicketSeed,
};
use domain::{EventId, IdempotencyKey, OrderId, Rejection, TicketId, TierId};
use futures::StreamExt as _;
use parking_lot::Mutex;
use payments::{
    ChargeOutcome, ChargeRequest, DeclineReason, PaymentError, PaymentPort, RefundRequest,
    WebhookEvent, WebhookEventType, charge_within,
};
use store::{EventStore, Position};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::actor::{ActorConfig, ActorNotices, Answered, CommandReply, InventoryMsg, stream_name};
use crate::clock::Clock;
use crate::codec;
use crate::error::{CommandError, Receipt};
use crate::registry::Registry;

/// Namespace of the ids this crate derives from idempotency keys.
const COMMANDS_NAMESPACE: Uuid = Uuid::from_u128(0x5d0c_6a5e_2b1f_4c7e_9a3d_8e21_f4b6_0c17);

/// Tuning of the command side.
#[derive(Clone, Debug)]
pub struct CommandConfig {
    /// How the inventory actors behave.
    pub actor: ActorConfig,
    /// How long a hold lasts unless paid.
    pub hold_ttl: chrono::Duration,
    /// How long a charge may take before the hold is released (the payment then counts as
    /// failed; a late success is refunded).
    pub payment_timeout: Duration,
    /// How long a caller waits for an actor's answer before `UNAVAILABLE`.
    pub call_timeout: Duration,
    /// How often a command is sent again to a fresh actor when its actor stopped before
    /// answering (safe: the idempotency key makes a repeat answer the first outcome).
    pub max_send_attempts: u32,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            actor: ActorConfig::default(),
            hold_ttl: chrono::Duration::minutes(10),
            payment_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            max_send_attempts: 3,
        }
    }
}

/// Who asks, under which idempotency key and request.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The authenticated caller.
    pub actor: Actor,
    /// The client's idempotency key (validated here: a bad key is `INVALID_INPUT`).
    pub idempotency_key: String,
    /// The request id that flows into the stored events' metadata.
    pub correlation_id: Uuid,
}

impl RequestContext {
    /// A context with a fresh correlation id.
    pub fn new(actor: Actor, idempotency_key: impl Into<String>) -> Self {
        Self {
            actor,
            idempotency_key: idempotency_key.into(),
            correlation_id: codec::new_event_id(),
        }
    }
}

/// What became of a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayOutcome {
    /// The order is paid; these tickets were issued.
    Confirmed {
        order_id: OrderId,
        tickets: Vec<TicketId>,
    },
    /// The provider declined; the hold was released.
    Declined {
        order_id: OrderId,
        reason: DeclineReason,
    },
    /// The provider did not answer in time; the hold was released (a late success is
    /// refunded when its webhook arrives).
    TimedOut { order_id: OrderId },
    /// The provider answers later by webhook; the hold stays until then or its expiry.
    Pending {
        order_id: OrderId,
        charge_id: String,
    },
    /// Money arrived that could not buy the order (the hold was gone): it was refunded.
    Refunded {
        order_id: OrderId,
        refund_id: String,
        reason: RefundReason,
    },
    /// A webhook that needs no action (a refund confirmation).
    Acknowledged,
}

impl PayOutcome {
    /// The order the payment was for (none for an acknowledgement).
    pub fn order_id(&self) -> Option<OrderId> {
        match self {
            Self::Confirmed { order_id, .. }
            | Self::Declined { order_id, .. }
            | Self::TimedOut { order_id }
            | Self::Pending { order_id, .. }
            | Self::Refunded { order_id, .. } => Some(*order_id),
            Self::Acknowledged => None,
        }
    }
}

/// Finds the event an order belongs to (the read side knows every order); used to route a
/// payment webhook this process has no record of, for example after a restart.
#[async_trait]
pub trait OrderLocator: Send + Sync + 'static {
    /// The event of `order`, if the order is known.
    async fn event_of_order(&self, order: OrderId) -> Option<EventId>;
}

/// The command side. Cheap to clone; clones share the actors.
#[derive(Clone)]
pub struct CommandService {
    /// Everything clones share.
    inner: Arc<Inner>,
}

struct Inner {
    /// The inventory actors.
    registry: Registry,
    /// For reads outside the actors (payment references of cancelled orders).
    store: Arc<dyn EventStore>,
    /// Stamps commands.
    clock: Arc<dyn Clock>,
    /// Where money is taken and given back.
    payments: Arc<dyn PaymentPort>,
    /// Tuning.
    config: CommandConfig,
    /// Orders with a charge that may still report by webhook -> their event.
    payment_routes: PaymentRoutes,
    /// Fallback routing for webhooks of charges this process did not start.
    locator: Mutex<Option<Arc<dyn OrderLocator>>>,
}

impl CommandService {
    /// Starts the command side on a store, a clock and a payment provider.
    pub async fn start(
        store: Arc<dyn EventStore>,
        clock: Arc<dyn Clock>,
        payments: Arc<dyn PaymentPort>,
        config: CommandConfig,
    ) -> Result<Self, CommandError> {
        let (refunds_tx, refunds_rx) = mpsc::unbounded_channel();
        let notices = ActorNotices {
            refunds_owed: Some(refunds_tx),
        };
        let registry =
            Registry::start(store.clone(), clock.clone(), config.actor.clone(), notices).await?;
        let inner = Arc::new(Inner {
            registry,
            store,
            clock,
            payments,
            config,
            payment_routes: PaymentRoutes::default(),
            locator: Mutex::new(None),
        });
        tokio::spawn(refund_worker(Arc::downgrade(&inner), refunds_rx));
        Ok(Self { inner })
    }

    /// Reconciles the payment provider's books with the orders in the background (see
    /// [`CommandService::reconcile_payments`]): a first pass at once settles every charge
    /// left unconfirmed before this start, then a pass every `interval` settles those seen
    /// unconfirmed at the pass before. Ends when the command side is dropped.
    pub fn spawn_reconciliation(&self, interval: Duration) {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut after: Option<String> = None;
            let mut seen: Option<std::collections::HashSet<String>> = None;
            loop {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let service = CommandService { inner };
                match service
                    .reconcile_payments(after.clone(), seen.as_ref())
                    .await
                {
                    Ok(pass) => {
                        if pass.confirmed + pass.refunded > 0 {
                            tracing::warn!(
                                confirmed = pass.confirmed,
                                refunded = pass.refunded,
                                "reconciliation settled charges that were never confirmed"
                            );
                        }
                        after = pass.resume_after;
                        seen = Some(pass.unconfirmed.into_iter().collect());
                    }
                    Err(error) => {
                        tracing::warn!(code = error.code(), %error, "payment reconciliation failed; retried at the next pass");
                    }
                }
                drop(service);
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// Sets the fallback that routes webhooks of unknown orders.
    pub fn set_order_locator(&self, locator: Arc<dyn OrderLocator>) {
        *self.inner.locator.lock() = Some(locator);
    }

    /// The actor registry (for supervision and tests).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Stops every actor without waiting (see [`Registry::stop`]).
    pub fn stop(&self) {
        self.inner.registry.stop();
    }

    /// Stops every actor and waits for them, at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.registry.shutdown(timeout).await;
    }

    /// Creates an event; its id is derived from the caller and the idempotency key, so a
    /// retry creates nothing new.
    pub async fn create_event(
        &self,
        ctx: &RequestContext,
        details: DetailsInput,
    ) -> Result<Receipt<InventoryOutcome>, CommandError> {
        let event_id = EventId(derive_id("event", None, ctx));
        self.execute(
            ctx,
            event_id,
            InventoryCommand::CreateEvent { event_id, details },
        )
        .await
    }

    /// Runs any inventory command as given (organizer commands: details, sales window,
    /// per-user limit, publish, cancel, tiers, seats; also check-in and release). The
    /// domain authorises it against `ctx.actor`.
    pub async fn execute(
        &self,
        ctx: &RequestContext,
        event_id: EventId,
        body: InventoryCommand,
    ) -> Result<Receipt<InventoryOutcome>, CommandError> {
        let meta = self.meta(ctx, &ctx.actor)?;
        self.send(event_id, Command::new(meta, body)).await
    }

    /// Holds tickets for the caller for the configured time.
    pub async fn hold(
        &self,
        ctx: &RequestContext,
        event_id: EventId,
        tier_id: TierId,
        selection: Selection,
    ) -> Result<Receipt<InventoryOutcome>, CommandError> {
        Ok(self
            .place_hold(ctx, HoldKind::Hold, event_id, tier_id, selection)
            .await?
            .receipt)
    }

    /// [`CommandService::hold`], saying whether the hold was placed now or recalled. The
    /// order's id is derived from the request (its kind, event, caller and key), so a
    /// retry finds the same order and no two requests ever share one.
    async fn place_hold(
        &self,
        ctx: &RequestContext,
        kind: HoldKind,
        event_id: EventId,
        tier_id: TierId,
        selection: Selection,
    ) -> Result<Answered, CommandError> {
        let meta = self.meta(ctx, &ctx.actor)?;
        let order_id = OrderId(derive_id(kind.id_purpose(), Some(event_id), ctx));
        let req = HoldRequest {
            order_id,
            tier_id,
            selection,
            expires_at: meta.now + self.inner.config.hold_ttl,
        };
        self.send_answered(
            event_id,
            Command::new(meta, InventoryCommand::PlaceHold(req)),
        )
        .await
    }

    /// Releases a live hold early.
    pub async fn release_hold(
        &self,
        ctx: &RequestContext,
        event_id: EventId,
        order_id: OrderId,
    ) -> Result<Receipt<InventoryOutcome>, CommandError> {
        self.execute(ctx, event_id, InventoryCommand::ReleaseHold { order_id })
            .await
    }

    /// Checks a ticket in at the door.
    pub async fn check_in(
        &self,
        ctx: &RequestContext,
        event_id: EventId,
        ticket_id: TicketId,
    ) -> Result<Receipt<InventoryOutcome>, CommandError> {
        self.execute(ctx, event_id, InventoryCommand::CheckIn { ticket_id })
            .await
    }

    /// Holds and pays in one call: a hold, then [`CommandService::pay`]. A retry with the
    /// same idempotency key finds the same order and never charges twice; once the order is
    /// paid, a retry answers it as the first attempt did (also after a restart).
    pub async fn purchase(
        &self,
        ctx: &RequestContext,
        event_id: EventId,
        tier_id: TierId,
        selection: Selection,
        token: &str,
    ) -> Result<Receipt<PayOutcome>, CommandError> {
        let quantity = match &selection {
            Selection::Quantity { quantity } => u32::try_from(*quantity).unwrap_or(0),
            Selection::Seats { seats } => u32::try_from(seats.len()).unwrap_or(0),
        };
        let held = self
            .place_hold(ctx, HoldKind::Purchase, event_id, tier_id, selection)
            .await?;
        let InventoryOutcome::Held {
            order_id,
            expires_at,
            total,
        } = held.receipt.outcome
        else {
            return Err(CommandError::Unavailable(format!(
                "a hold answered {:?}",
                held.receipt.outcome
            )));
        };
        let Some(user_id) = ctx.actor.user_id() else {
            return Err(Rejection::forbidden("only a signed-in user can buy tickets").into());
        };
        let pay_ctx = RequestContext {
            actor: ctx.actor.clone(),
            idempotency_key: derived_key("pay", &ctx.idempotency_key),
            correlation_id: ctx.correlation_id,
        };
        let order = if held.replayed {
            // A retried purchase finds the hold its first attempt made, which may be paid
            // by now (also before a restart, when the provider no longer knows the charge):
            // paying decides from the order as it stands, not from the hold's answer.
            self.read(event_id, move |inv| inv.order(order_id))
                .await?
                .ok_or_else(|| Rejection::not_found("order", order_id))?
        } else {
            // Placed just now: a live hold of what was asked for.
            OrderView {
                order_id,
                user_id,
                tier_id,
                quantity,
                seats: Vec::new(),
                status: OrderStatus::Held,
                expires_at,
                total,
                tickets: Vec::new(),
                refunds: Vec::new(),
            }
        };
        self.pay_order(&pay_ctx, event_id, order, token, held.receipt.position)
            .await
    }

    /// Pays a held order with a payment token: charges the provider (idempotently per
    /// order, outside the actor, within the payment timeout), then confirms the order on
    /// success, releases the hold on a decline or timeout, or keeps it for the webhook.
    /// An order that is already paid is answered with its tickets and charged nothing.
    pub async fn pay(
        &self,
        ctx: &RequestContext,
        event_id: EventId,
        order_id: OrderId,
        token: &str,
    ) -> Result<Receipt<PayOutcome>, CommandError> {
        IdempotencyKey::parse(&ctx.idempotency_key)?;
        let order = self
            .read(event_id, move |inv| inv.order(order_id))
            .await?
            .ok_or_else(|| Rejection::not_found("order", order_id))?;
        if ctx.actor.user_id() != Some(order.user_id) && !ctx.actor.is_admin() {
            return Err(Rejection::forbidden("only the buyer can pay for this order").into());
        }
        match order.status {
            OrderStatus::Held | OrderStatus::Paid => {}
            OrderStatus::Expired => {
                return Err(Rejection::HoldExpired {
                    order: order_id.to_string(),
                    expired_at: order.expires_at,
                }
                .into());
            }
            other => {
                return Err(Rejection::InvalidState(format!(
                    "order {order_id} is {other:?}, not a live hold"
                ))
                .into());
            }
        }
        // The order was there to be paid: a pending charge adds nothing to wait for.
        self.pay_order(ctx, event_id, order, token, Position::START)
            .await
    }

    /// Charges for a live (or already paid) order and settles it. `known_at` is where the
    /// order is known to be stored: a pending charge stores nothing, and answers it.
    async fn pay_order(
        &self,
        ctx: &RequestContext,
        event_id: EventId,
        order: OrderView,
        token: &str,
        known_at: Position,
    ) -> Result<Receipt<PayOutcome>, CommandError> {
        let order_id = order.order_id;
        if order.status == OrderStatus::Paid
            && let Some(paid) = self.confirmation_of(event_id, order_id).await?
        {
            // A retry of a payment that went through: answer it without charging again.
            // The provider's per-order idempotency cannot be relied on here, since it may not
            // know the first charge any more (a restart of a provider without a durable
            // ledger); confirming a new charge would only refund it as a duplicate. An
            // order paid only in the actor's undecided state has no stored confirmation
            // yet: its payment is being confirmed in this process, and charging again
            // gets the same charge from the provider, which confirms nothing twice.
            return Ok(Receipt {
                outcome: PayOutcome::Confirmed {
                    order_id,
                    tickets: paid.tickets,
                },
                position: paid.position,
            });
        }
        if order.total.amount_minor == 0 {
            // Free tickets: nothing to charge, the order is confirmed as it is.
            let reference = format!("free-{order_id}");
            return self
                .confirm(
                    event_id,
                    &order,
                    &reference,
                    0,
                    order.total.currency.as_str(),
                    ctx.correlation_id,
                )
                .await;
        }
        let request = ChargeRequest::for_order(
            order_id.as_uuid(),
            order.total.amount_minor,
            order.total.currency.as_str(),
            token,
        );
        // Any charge may report later by webhook: keep its route until it settles.
        self.inner.payment_routes.remember(order_id, event_id);
        let charged = charge_within(
            self.inner.payments.as_ref(),
            request,
            self.inner.config.payment_timeout,
        )
        .await;
        match charged {
            Ok(ChargeOutcome::Succeeded { charge_id }) => {
                self.inner.payment_routes.forget(order_id);
                self.confirm(
                    event_id,
                    &order,
                    &charge_id,
                    order.total.amount_minor,
                    order.total.currency.as_str(),
                    ctx.correlation_id,
                )
                .await
            }
            Ok(ChargeOutcome::Declined { reason }) => {
                self.inner.payment_routes.forget(order_id);
                let position = self.release_after_payment(ctx, event_id, &order).await?;
                Ok(Receipt {
                    outcome: PayOutcome::Declined { order_id, reason },
                    position,
                })
            }
            Ok(ChargeOutcome::Pending { charge_id }) => Ok(Receipt {
                outcome: PayOutcome::Pending {
                    order_id,
                    charge_id,
                },
                position: known_at,
            }),
            Err(PaymentError::TimedOut(_)) => {
                let position = self.release_after_payment(ctx, event_id, &order).await?;
                Ok(Receipt {
                    outcome: PayOutcome::TimedOut { order_id },
                    position,
                })
            }
            Err(e) => {
                self.inner.payment_routes.forget(order_id);
                Err(CommandError::Payment(e))
            }
        }
    }

    /// Handles a verified payment webhook (the API checks its signature and timestamp with
    /// `payments::parse_webhook`): a late success confirms the order, or is refunded when
    /// the hold is gone; a late decline releases the hold. Safe to deliver more than once.
    pub async fn handle_payment_webhook(
        &self,
        webhook: &WebhookEvent,
    ) -> Result<Receipt<PayOutcome>, CommandError> {
        let order_id = OrderId(webhook.order_id);
        let succeeded = match webhook.kind {
            WebhookEventType::ChargeSucceeded => true,
            WebhookEventType::ChargeFailed => false,
            // Our own refund, confirmed: nothing to change.
            WebhookEventType::RefundSucceeded => {
                return Ok(Receipt {
                    outcome: PayOutcome::Acknowledged,
                    position: Position::START,
                });
            }
        };
        let routed = self.inner.payment_routes.get(order_id);
        let event_id = match routed {
            Some(e) => e,
            None => {
                let locator = self.inner.locator.lock().clone();
                match locator {
                    Some(l) => l.event_of_order(order_id).await,
                    None => None,
                }
                .ok_or_else(|| Rejection::not_found("order", order_id))?
            }
        };
        let order = self
            .read(event_id, move |inv| inv.order(order_id))
            .await?
            .ok_or_else(|| Rejection::not_found("order", order_id))?;
        let correlation_id = codec::new_event_id();
        let receipt = if succeeded {
            self.confirm(
                event_id,
                &order,
                &webhook.charge_id,
                webhook.amount,
                &webhook.currency,
                correlation_id,
            )
            .await?
        } else {
            let owner = Actor::user(order.user_id, [Role::Customer]);
            let ctx = RequestContext {
                actor: owner,
                idempotency_key: derived_key("webhook-release", &webhook.id),
                correlation_id,
            };
            let position = self.release_after_payment(&ctx, event_id, &order).await?;
            Receipt {
                outcome: PayOutcome::Declined {
                    order_id,
                    reason: webhook
                        .failure_reason
                        .unwrap_or(DeclineReason::CardDeclined),
                },
                position,
            }
        };
        // The route stays (until it is an hour old): the provider may deliver the same
        // webhook again.
        Ok(receipt)
    }

    /// Cancels an order; for a paid order the payment is refunded through the provider.
    pub async fn cancel_order(
        &self,
        ctx: &RequestContext,
        event_id: EventId,
        order_id: OrderId,
    ) -> Result<Receipt<InventoryOutcome>, CommandError> {
        let mut receipt = self
            .execute(ctx, event_id, InventoryCommand::CancelOrder { order_id })
            .await?;
        if let InventoryOutcome::OrderCancelled {
            refund: Some(amount),
            ..
        } = &receipt.outcome
            && amount.amount_minor > 0
            && let Some(charge_id) = self.payment_ref_of(event_id, order_id).await?
        {
            let refunded = self
                .refund_and_record(
                    event_id,
                    order_id,
                    &charge_id,
                    payments::RefundReason::OrderCancelled,
                    ctx.correlation_id,
                )
                .await?;
            receipt.position = receipt.position.max(refunded.position);
        }
        Ok(receipt)
    }

    /// Cancels an event: nothing sells any more and no ticket admits anyone. Its orders are
    /// cancelled by the event's actor a step at a time (the first step with this command;
    /// an event of any size is cancelled), and every paid one is refunded through the
    /// provider by the refund sweep ([`CommandService::pay_refunds_owed`]) once its
    /// cancellation is durable, retried until the provider has paid it back.
    pub async fn cancel_event(
        &self,
        ctx: &RequestContext,
        event_id: EventId,
        reason: String,
    ) -> Result<Receipt<InventoryOutcome>, CommandError> {
        self.execute(ctx, event_id, InventoryCommand::CancelEvent { reason })
            .await
    }

    /// Pays back every refund the event owes that the provider has not paid yet (cancelled
    /// paid orders, payments that bought nothing), from its durable stream, and records
    /// each in the stream. Safe to run at any time and any number of times: the provider
    /// refunds a charge once and the record is idempotent. Runs in the background after
    /// every change that owes money and after a restart; also callable by operators.
    pub async fn pay_refunds_owed(&self, event_id: EventId) -> Result<RefundSweep, CommandError> {
        let owed = self.refunds_owed(event_id).await?;
        let correlation_id = codec::new_event_id();
        let results: Vec<Result<RecordedRefund, CommandError>> = futures::stream::iter(owed)
            .map(|owed| async move {
                self.refund_and_record(
                    event_id,
                    owed.order_id,
                    &owed.payment_ref,
                    refund_reason(owed.reason),
                    correlation_id,
                )
                .await
            })
            .buffer_unordered(REFUND_CONCURRENCY)
            .collect()
            .await;
        let mut sweep = RefundSweep::default();
        for result in results {
            match result {
                Ok(_) => sweep.refunded += 1,
                Err(error) => {
                    tracing::warn!(event = %event_id, code = error.code(), %error, "a refund owed could not be paid; it is retried");
                    sweep.failed += 1;
                }
            }
        }
        metrics::counter!("payments_refunds_swept_total", "result" => "refunded")
            .increment(sweep.refunded as u64);
        metrics::counter!("payments_refunds_swept_total", "result" => "failed")
            .increment(sweep.failed as u64);
        Ok(sweep)
    }

    /// The refunds the event's durable stream owes and has not recorded as paid, with the
    /// payment each one gives back.
    async fn refunds_owed(&self, event_id: EventId) -> Result<Vec<OwedRefund>, CommandError> {
        use domain::inventory::InventoryEvent as E;
        let stream = stream_name(event_id)?;
        let mut paid_by: HashMap<OrderId, String> = HashMap::new();
        let mut owed: Vec<OwedRefund> = Vec::new();
        let mut refunded: std::collections::HashSet<(OrderId, String)> = Default::default();
        let mut from = 0;
        loop {
            let page = self.inner.store.read_stream(&stream, from, 4096).await?;
            for recorded in &page {
                if !matches!(
                    recorded.event_type.as_str(),
                    "OrderConfirmed" | "OrderCancelled" | "PaymentRefundOwed" | "RefundIssued"
                ) {
                    continue;
                }
                match codec::decode(recorded)? {
                    E::OrderConfirmed(c) => {
                        paid_by.insert(c.order_id, c.payment_ref);
                    }
                    E::OrderCancelled(c) if c.refund.is_some_and(|r| r.amount_minor > 0) => {
                        if let Some(payment_ref) = paid_by.get(&c.order_id) {
                            owed.push(OwedRefund {
                                order_id: c.order_id,
                                payment_ref: payment_ref.clone(),
                                reason: c.reason,
                            });
                        }
                    }
                    E::PaymentRefundOwed(p) if p.amount.amount_minor > 0 => owed.push(OwedRefund {
                        order_id: p.order_id,
                        payment_ref: p.payment_ref,
                        reason: p.reason,
                    }),
                    E::RefundIssued(r) => {
                        refunded.insert((r.order_id, r.payment_ref));
                    }
                    _ => {}
                }
            }
            match page.last() {
                Some(last) if page.len() == 4096 => from = last.version + 1,
                _ => break,
            }
        }
        let mut seen = std::collections::HashSet::new();
        owed.retain(|o| {
            let key = (o.order_id, o.payment_ref.clone());
            !refunded.contains(&key) && seen.insert(key)
        });
        Ok(owed)
    }

    /// Checks the payment provider's charges listed after `after` against the orders they
    /// were taken for, and settles every successful charge its order does not know (the
    /// process stopped between the charge and its confirmation): it confirms the order if
    /// its hold is still live, and is otherwise owed back and refunded. Charges seen
    /// unsettled at an earlier pass are taken only from `acting_on` (every charge when
    /// `None`), so that a payment still being confirmed by a request is left to it.
    /// Returns where the next pass goes on, and what it found.
    pub async fn reconcile_payments(
        &self,
        after: Option<String>,
        acting_on: Option<&std::collections::HashSet<String>>,
    ) -> Result<Reconciliation, CommandError> {
        let mut pass = Reconciliation {
            resume_after: after.clone(),
            ..Reconciliation::default()
        };
        let mut cursor = after;
        let mut settled_prefix = true;
        loop {
            let page = self
                .inner
                .payments
                .list_charges(cursor.as_deref(), 500)
                .await
                .map_err(CommandError::Payment)?;
            let Some(last) = page.last() else {
                break;
            };
            cursor = Some(last.cursor.clone());
            let full = page.len() == 500;
            for charge in page {
                pass.checked += 1;
                let unsettled = match charge.status {
                    payments::ListedChargeStatus::Pending => true,
                    payments::ListedChargeStatus::Declined => false,
                    payments::ListedChargeStatus::Succeeded => {
                        self.reconcile_charge(&charge, acting_on, &mut pass).await?
                    }
                };
                if unsettled {
                    settled_prefix = false;
                } else if settled_prefix {
                    pass.resume_after = Some(charge.cursor.clone());
                }
            }
            if !full {
                break;
            }
        }
        Ok(pass)
    }

    /// Settles one successful charge if its order does not know it; returns whether it is
    /// left for a later pass.
    async fn reconcile_charge(
        &self,
        charge: &payments::ListedCharge,
        acting_on: Option<&std::collections::HashSet<String>>,
        pass: &mut Reconciliation,
    ) -> Result<bool, CommandError> {
        let order_id = OrderId(charge.order_id);
        let locator = self.inner.locator.lock().clone();
        let event_id = match self.inner.payment_routes.get(order_id) {
            Some(event) => Some(event),
            None => match locator {
                Some(l) => l.event_of_order(order_id).await,
                None => None,
            },
        };
        let Some(event_id) = event_id else {
            // An order nobody knows (yet): looked at again next time.
            pass.unknown_orders += 1;
            return Ok(true);
        };
        let charge_id = charge.charge_id.clone();
        let (known, order) = self
            .read(event_id, move |inv| {
                (inv.knows_payment(order_id, &charge_id), inv.order(order_id))
            })
            .await?;
        if known {
            return Ok(false);
        }
        if acting_on.is_some_and(|seen| !seen.contains(&charge.charge_id)) {
            pass.unconfirmed.push(charge.charge_id.clone());
            return Ok(true);
        }
        let Some(order) = order else {
            pass.unknown_orders += 1;
            return Ok(true);
        };
        tracing::warn!(event = %event_id, order = %order_id, charge = %charge.charge_id, "a charge was never confirmed; settling it now");
        let settled = self
            .confirm(
                event_id,
                &order,
                &charge.charge_id,
                charge.amount_minor,
                &charge.currency,
                codec::new_event_id(),
            )
            .await?;
        match settled.outcome {
            PayOutcome::Confirmed { .. } => pass.confirmed += 1,
            _ => pass.refunded += 1,
        }
        metrics::counter!("payments_reconciled_total").increment(1);
        Ok(false)
    }

    /// Expires the due holds of an event now (the actor's own timer does this on time;
    /// this is for operators and tests that move a manual clock).
    pub async fn expire_due(&self, event_id: EventId) -> Result<(), CommandError> {
        let actor = self.inner.registry.actor_for(event_id, false).await?;
        actor
            .send_message(InventoryMsg::ExpireDue)
            .map_err(|_| CommandError::Unavailable("the event's actor stopped".into()))
    }

    /// Loads the actor of every existing event, so that holds recorded before a restart
    /// expire on time (those already past expire at once). Actors without live holds stop
    /// again after the idle timeout. Returns how many events were loaded.
    pub async fn resume_all(&self) -> Result<usize, CommandError> {
        let mut after: Option<store::StreamName> = None;
        let mut loaded = 0;
        loop {
            let page = self
                .inner
                .store
                .list_streams(domain::ids::streams::INVENTORY_PREFIX, after.as_ref(), 1000)
                .await?;
            for stream in &page {
                if let Some(event_id) = domain::ids::streams::parse_inventory(stream.as_str()) {
                    self.inner.registry.actor_for(event_id, false).await?;
                    loaded += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == 1000 => after = Some(last.clone()),
                _ => return Ok(loaded),
            }
        }
    }

    /// Answers a question from an event's current state (decided events included). If the
    /// actor stops before answering (idle, or a restart), a fresh one is asked.
    pub async fn read<T: Send + 'static>(
        &self,
        event_id: EventId,
        f: impl Fn(&Inventory) -> T + Send + Sync + 'static,
    ) -> Result<T, CommandError> {
        let f = Arc::new(f);
        for _ in 0..self.inner.config.max_send_attempts.max(1) {
            let actor = self.inner.registry.actor_for(event_id, false).await?;
            let (tx, rx) = oneshot::channel();
            let question = f.clone();
            let msg = InventoryMsg::Read(Box::new(move |inv| {
                let _ = tx.send(question(inv));
            }));
            if actor.send_message(msg).is_err() {
                continue;
            }
            match tokio::time::timeout(self.inner.config.call_timeout, rx).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(_)) => continue,
                Err(_) => {
                    return Err(CommandError::Unavailable(
                        "the event's actor did not answer in time".into(),
                    ));
                }
            }
        }
        Err(CommandError::Unavailable(
            "the event's actor stopped before answering".into(),
        ))
    }

    /// Confirms an order with a successful charge; refunds the charge when the order can
    /// no longer be bought with it.
    async fn confirm(
        &self,
        event_id: EventId,
        order: &OrderView,
        charge_id: &str,
        amount_minor: u64,
        currency: &str,
        correlation_id: Uuid,
    ) -> Result<Receipt<PayOutcome>, CommandError> {
        let tickets = (0..order.quantity).map(|_| new_ticket_seed()).collect();
        let payment = PaymentInput {
            payment_ref: charge_id.to_owned(),
            amount_minor: i64::try_from(amount_minor).unwrap_or(i64::MAX),
            currency: currency.to_owned(),
            tickets,
        };
        // A fresh key per attempt: a repeat of the same payment is recognised by its
        // reference (the order is already paid by it) and writes nothing. The correlation
        // id is the request's that paid, so the tickets can be traced to it.
        let meta = CommandMeta {
            idempotency_key: IdempotencyKey::parse(&format!("confirm-{}", codec::new_event_id()))?,
            actor: Actor::System,
            now: self.inner.clock.now(),
            correlation_id,
        };
        let order_id = order.order_id;
        let cmd = Command::new(meta, InventoryCommand::ConfirmPayment { order_id, payment });
        let receipt = self.send(event_id, cmd).await?;
        match receipt.outcome {
            InventoryOutcome::Confirmed { order_id, tickets } => Ok(Receipt {
                outcome: PayOutcome::Confirmed { order_id, tickets },
                position: receipt.position,
            }),
            InventoryOutcome::RefundOwed { reason, .. } => {
                let refunded = self
                    .refund_and_record(
                        event_id,
                        order_id,
                        charge_id,
                        refund_reason(reason),
                        correlation_id,
                    )
                    .await?;
                metrics::counter!("payments_refunded", "reason" => format!("{reason:?}"))
                    .increment(1);
                Ok(Receipt {
                    outcome: PayOutcome::Refunded {
                        order_id,
                        refund_id: refunded.refund_id,
                        reason,
                    },
                    position: receipt.position.max(refunded.position),
                })
            }
            other => Err(CommandError::Unavailable(format!(
                "confirming a payment answered {other:?}"
            ))),
        }
    }

    /// Pays back a refund owed for `charge_id` through the provider, then records the
    /// refund in the event's stream (`RefundIssued`). Both steps are idempotent: the
    /// provider refunds a charge once and answers the same refund again, and the record's
    /// key is derived from that refund, so a retry or a redelivered webhook records one
    /// refund. A failure between the two leaves the refund owed for the next attempt.
    async fn refund_and_record(
        &self,
        event_id: EventId,
        order_id: OrderId,
        charge_id: &str,
        reason: payments::RefundReason,
        correlation_id: Uuid,
    ) -> Result<RecordedRefund, CommandError> {
        let refunded = self
            .inner
            .payments
            .refund(RefundRequest {
                charge_id: charge_id.to_owned(),
                order_id: order_id.as_uuid(),
                reason,
            })
            .await
            .map_err(CommandError::Payment)?;
        let payments::RefundOutcome::Succeeded {
            refund_id,
            amount_minor,
            currency,
        } = refunded;
        let meta = CommandMeta {
            idempotency_key: IdempotencyKey::parse(&derived_key(
                "refund",
                &format!("{charge_id}:{refund_id}"),
            ))?,
            actor: Actor::System,
            now: self.inner.clock.now(),
            correlation_id,
        };
        let body = InventoryCommand::RecordRefund {
            order_id,
            payment_ref: charge_id.to_owned(),
            refund_id: refund_id.clone(),
            // Out of range is refused by the domain as INVALID_INPUT, never wrapped.
            amount_minor: i64::try_from(amount_minor).unwrap_or(i64::MAX),
            currency,
        };
        let receipt = self.send(event_id, Command::new(meta, body)).await?;
        Ok(RecordedRefund {
            refund_id,
            position: receipt.position,
        })
    }

    /// Releases a hold whose payment failed; a hold that is already gone needs nothing.
    async fn release_after_payment(
        &self,
        ctx: &RequestContext,
        event_id: EventId,
        order: &OrderView,
    ) -> Result<Position, CommandError> {
        let release_ctx = RequestContext {
            actor: ctx.actor.clone(),
            idempotency_key: derived_key("release", &ctx.idempotency_key),
            correlation_id: ctx.correlation_id,
        };
        let released = self
            .execute(
                &release_ctx,
                event_id,
                InventoryCommand::ReleaseHold {
                    order_id: order.order_id,
                },
            )
            .await;
        match released {
            Ok(receipt) => Ok(receipt.position),
            Err(CommandError::Rejected(_)) => Ok(Position::START),
            Err(e) => Err(e),
        }
    }

    /// The payment reference that paid an order, read from the event's stream.
    async fn payment_ref_of(
        &self,
        event_id: EventId,
        order_id: OrderId,
    ) -> Result<Option<String>, CommandError> {
        Ok(self
            .confirmation_of(event_id, order_id)
            .await?
            .map(|paid| paid.payment_ref))
    }

    /// How an order was paid, from its durable `OrderConfirmed` in the event's stream
    /// (`None` while it is not stored).
    async fn confirmation_of(
        &self,
        event_id: EventId,
        order_id: OrderId,
    ) -> Result<Option<StoredConfirmation>, CommandError> {
        let stream = stream_name(event_id)?;
        let mut found: Option<StoredConfirmation> = None;
        let mut from = 0;
        loop {
            let page = self.inner.store.read_stream(&stream, from, 4096).await?;
            for recorded in &page {
                match &mut found {
                    None if recorded.event_type == "OrderConfirmed" => {
                        if let domain::inventory::InventoryEvent::OrderConfirmed(c) =
                            codec::decode(recorded)?
                            && c.order_id == order_id
                        {
                            let paid = StoredConfirmation {
                                payment_ref: c.payment_ref,
                                tickets: c.tickets.iter().map(|t| t.ticket_id).collect(),
                                position: recorded.position,
                            };
                            // A confirmation that carries its idempotency record ends its
                            // decision: its position is the one the first answer carried.
                            if c.command.is_some() {
                                return Ok(Some(paid));
                            }
                            found = Some(paid);
                        }
                    }
                    // Stored before confirmations carried their record: the decision ends
                    // with its separate idempotency record.
                    Some(paid) if recorded.event_type == "InventoryCommandAccepted" => {
                        paid.position = recorded.position;
                        return Ok(found);
                    }
                    _ => {}
                }
            }
            match page.last() {
                Some(last) if page.len() == 4096 => from = last.version + 1,
                _ => return Ok(found),
            }
        }
    }

    /// Stamps a command of `actor` with the context's key, the time and the request id.
    fn meta(&self, ctx: &RequestContext, actor: &Actor) -> Result<CommandMeta, CommandError> {
        Ok(CommandMeta {
            idempotency_key: IdempotencyKey::parse(&ctx.idempotency_key)?,
            actor: actor.clone(),
            now: self.inner.clock.now(),
            correlation_id: ctx.correlation_id,
        })
    }

    /// Sends a command to its event's actor and waits for the durable answer. If the actor
    /// stops before answering, the command goes to a fresh actor (same idempotency key).
    async fn send(
        &self,
        event_id: EventId,
        cmd: Command<InventoryCommand>,
    ) -> Result<Receipt<InventoryOutcome>, CommandError> {
        Ok(self.send_answered(event_id, cmd).await?.receipt)
    }

    /// [`CommandService::send`], saying whether the command was answered from its record.
    async fn send_answered(
        &self,
        event_id: EventId,
        cmd: Command<InventoryCommand>,
    ) -> Result<Answered, CommandError> {
        let cmd = Arc::new(cmd);
        let allow_new = matches!(cmd.body, InventoryCommand::CreateEvent { .. });
        let attempts = self.inner.config.max_send_attempts.max(1);
        for _ in 0..attempts {
            let actor = self.inner.registry.actor_for(event_id, allow_new).await?;
            let (tx, rx) = oneshot::channel::<CommandReply>();
            let sent = actor.send_message(InventoryMsg::Execute {
                cmd: cmd.clone(),
                reply: tx.into(),
            });
            if sent.is_err() {
                // The actor stopped before the command reached it: a fresh one takes it.
                continue;
            }
            match tokio::time::timeout(self.inner.config.call_timeout, rx).await {
                Ok(Ok(reply)) => return reply,
                // The actor stopped or failed with the command inside; it may or may not
                // have been stored, and the idempotency key makes sending it again safe.
                Ok(Err(_)) => continue,
                Err(_) => {
                    return Err(CommandError::Unavailable(format!(
                        "the actor of event {event_id} did not answer within {:?}",
                        self.inner.config.call_timeout
                    )));
                }
            }
        }
        Err(CommandError::Unavailable(format!(
            "the actor of event {event_id} stopped before answering"
        )))
    }
}

/// How many refunds one sweep pays at once.
const REFUND_CONCURRENCY: usize = 16;

/// What a refund sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefundSweep {
    /// Refunds paid and recorded (or found already paid and recorded now).
    pub refunded: usize,
    /// Refunds still owed because the provider or the store failed: retried later.
    pub failed: usize,
}

/// What a reconciliation pass found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Charges looked at.
    pub checked: usize,
    /// Unconfirmed charges that confirmed their order (its hold was still live).
    pub confirmed: usize,
    /// Unconfirmed charges owed back and refunded (their hold was gone).
    pub refunded: usize,
    /// Successful charges of orders this process cannot find (yet).
    pub unknown_orders: usize,
    /// Successful charges their order does not know, left to a later pass.
    pub unconfirmed: Vec<String>,
    /// Where the next pass goes on: every charge up to here is settled and checked.
    pub resume_after: Option<String>,
}

/// A refund owed by an event's stream.
struct OwedRefund {
    order_id: OrderId,
    /// The payment to give back.
    payment_ref: String,
    reason: RefundReason,
}

/// Routes of charges that may still report by webhook: order -> event, with when the
/// route was made, so that routes of charges that never report are forgotten.
#[derive(Default)]
struct PaymentRoutes(Mutex<HashMap<OrderId, (EventId, std::time::Instant)>>);

/// How long a charge's route is kept for its webhook; a later webhook is routed by the
/// read side.
const PAYMENT_ROUTE_TTL: Duration = Duration::from_secs(3600);

impl PaymentRoutes {
    fn remember(&self, order: OrderId, event: EventId) {
        let now = std::time::Instant::now();
        let mut routes = self.0.lock();
        if routes.len() >= 1024 && routes.len().is_power_of_two() {
            routes.retain(|_, (_, at)| now.duration_since(*at) < PAYMENT_ROUTE_TTL);
        }
        routes.insert(order, (event, now));
    }

    fn forget(&self, order: OrderId) {
        self.0.lock().remove(&order);
    }

    fn get(&self, order: OrderId) -> Option<EventId> {
        self.0.lock().get(&order).map(|(event, _)| *event)
    }
}

/// Pays the refunds events owe, as their actors report them: each reported event is swept
/// (see [`CommandService::pay_refunds_owed`]) shortly after its report, so that a burst of
/// reports is one sweep and a refund paid by its own request is not paid twice; an event
/// whose sweep failed is swept again with backoff until it owes nothing. Ends when the
/// command side is gone.
async fn refund_worker(
    inner: std::sync::Weak<Inner>,
    mut reports: mpsc::UnboundedReceiver<EventId>,
) {
    use std::collections::BTreeSet;
    use tokio::time::Instant;
    const SETTLE: Duration = Duration::from_millis(500);
    const MAX_BACKOFF: Duration = Duration::from_secs(300);
    // Due sweeps, and each event's due time and failed sweeps so far.
    let mut due: BTreeSet<(Instant, EventId)> = BTreeSet::new();
    let mut scheduled: HashMap<EventId, (Instant, u32)> = HashMap::new();
    loop {
        let next = due.first().map(|(at, _)| *at);
        let report = tokio::select! {
            report = reports.recv() => match report {
                Some(event) => Some(event),
                None => return,
            },
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => None,
        };
        if let Some(event) = report {
            let at = Instant::now() + SETTLE;
            match scheduled.get(&event) {
                Some((when, _)) if *when <= at => {}
                Some(&(when, failures)) => {
                    due.remove(&(when, event));
                    due.insert((at, event));
                    scheduled.insert(event, (at, failures));
                }
                None => {
                    due.insert((at, event));
                    scheduled.insert(event, (at, 0));
                }
            }
            continue;
        }
        let Some((at, event)) = due.pop_first() else {
            continue;
        };
        let failures = scheduled.remove(&event).map_or(0, |(_, f)| f);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let service = CommandService { inner };
        let swept = service.pay_refunds_owed(event).await;
        drop(service);
        let failed = match swept {
            Ok(sweep) => sweep.failed > 0,
            Err(error) => {
                tracing::warn!(event = %event, code = error.code(), %error, "refund sweep failed; retried");
                true
            }
        };
        if failed {
            let backoff = Duration::from_secs(1 << failures.min(8)).min(MAX_BACKOFF);
            let retry = at.max(Instant::now()) + backoff;
            due.insert((retry, event));
            scheduled.insert(event, (retry, failures + 1));
        }
    }
}

/// A refund made by the provider and recorded in the event's stream.
struct RecordedRefund {
    /// The provider's id of the refund.
    refund_id: String,
    /// Where its `RefundIssued` (or the first record of it) was stored.
    position: Position,
}

/// An order's stored payment: what its first confirmation recorded.
struct StoredConfirmation {
    /// The provider's reference of the payment that paid the order.
    payment_ref: String,
    /// The tickets the confirmation issued.
    tickets: Vec<TicketId>,
    /// Where the confirmation was stored.
    position: Position,
}

/// Which request a hold belongs to: its order id is derived under this name, so that a
/// `holdTickets` and a `purchaseTickets` never name the same order.
#[derive(Clone, Copy, Debug)]
enum HoldKind {
    /// A hold paid later (or never).
    Hold,
    /// The hold of a purchase, paid at once.
    Purchase,
}

impl HoldKind {
    fn id_purpose(self) -> &'static str {
        match self {
            HoldKind::Hold => "order",
            HoldKind::Purchase => "purchase-order",
        }
    }
}

/// An id that is the same for every retry of one request and differs between requests:
/// derived from what it identifies (`purpose`), the event the request addresses (if any),
/// the caller and the client's key. The order id is also the payment provider's
/// idempotency key, so one key reused on two events must give two orders, or one charge
/// would pay for both.
fn derive_id(purpose: &str, event: Option<EventId>, ctx: &RequestContext) -> Uuid {
    let who = match &ctx.actor {
        Actor::User { id, .. } => id.to_string(),
        Actor::System => "system".into(),
        Actor::Anonymous => "anonymous".into(),
    };
    let name = match event {
        Some(event) => format!("{purpose}:{event}:{who}:{}", ctx.idempotency_key),
        None => format!("{purpose}:{who}:{}", ctx.idempotency_key),
    };
    Uuid::new_v5(&COMMANDS_NAMESPACE, name.as_bytes())
}

/// A sub-key for a step of a request, short whatever the client's key length.
fn derived_key(purpose: &str, key: &str) -> String {
    let id = Uuid::new_v5(&COMMANDS_NAMESPACE, format!("{purpose}:{key}").as_bytes());
    format!("{purpose}-{id}")
}

/// A new ticket's id and unguessable secret (128 random bits from the OS-seeded CSPRNG).
fn new_ticket_seed() -> TicketSeed {
    TicketSeed {
        ticket_id: TicketId(codec::new_event_id()),
        secret: hex::encode(rand::random::<[u8; 16]>()),
    }
}

fn refund_reason(reason: RefundReason) -> payments::RefundReason {
    match reason {
        RefundReason::HoldExpired | RefundReason::HoldReleased => {
            payments::RefundReason::HoldExpired
        }
        RefundReason::EventCancelled => payments::RefundReason::EventCancelled,
        RefundReason::AlreadyPaid => payments::RefundReason::Duplicate,
        // A payment of the wrong amount buys nothing: it goes back as if cancelled.
        RefundReason::OrderCancelled
        | RefundReason::CancelledByRequest
        | RefundReason::AmountMismatch => payments::RefundReason::OrderCancelled,
    }
}
