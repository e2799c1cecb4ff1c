//! Orders and tickets: holds, payments, purchases, cancellations, check-in, purchase
//! history and the organizer's sales report.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use commands::PayOutcome;
use domain::{
    EventId, OrderId, TicketId, TierId, UserId,
    inventory::{InventoryOutcome, Selection},
};
use projections::{OrderView, PageRequest};
use store::Position;

use super::{
    Services, actor_of, caller,
    catalogue::{PageInfo, manages},
    command_context, command_error, parse_id, read_your_writes, services,
    types::{Order, Ticket},
};
use crate::{
    auth::{AuthUser, Role, RoleGuard},
    context::RequestContext,
    error::ApiError,
    rate_limit::{RateLimitedAction, RateLimits},
};

/// What to hold: a quantity of a general tier, or named seats of a seated tier.
#[derive(InputObject)]
pub struct HoldTicketsInput {
    /// The event.
    pub event_id: ID,
    /// The tier.
    pub tier_id: ID,
    /// How many tickets (general admission).
    pub quantity: Option<i32>,
    /// Which seats (seated tiers).
    pub seats: Option<Vec<String>>,
    /// A retry with the same key never holds twice.
    pub idempotency_key: String,
}

/// What to buy in one call: a hold paid at once.
#[derive(InputObject)]
pub struct PurchaseTicketsInput {
    /// The event.
    pub event_id: ID,
    /// The tier.
    pub tier_id: ID,
    /// How many tickets (general admission).
    pub quantity: Option<i32>,
    /// Which seats (seated tiers).
    pub seats: Option<Vec<String>>,
    /// The payment provider's card token.
    pub payment_token: String,
    /// A retry with the same key never buys twice.
    pub idempotency_key: String,
}

/// One page of orders.
#[derive(SimpleObject)]
pub struct OrderConnection {
    /// The orders, newest first.
    pub nodes: Vec<Order>,
    /// Pagination.
    pub page_info: PageInfo,
}

/// Sales of one tier.
#[derive(SimpleObject)]
pub struct TierSalesReport {
    /// The tier.
    pub tier_id: ID,
    /// Its name.
    pub name: String,
    /// Tickets of paid, not cancelled orders.
    pub sold: u32,
    /// Tickets in live holds.
    pub held: u32,
    /// Tickets of cancelled orders.
    pub cancelled: u32,
    /// Net revenue per currency, in minor units.
    pub revenue: Vec<RevenueLine>,
}

/// Revenue in one currency.
#[derive(SimpleObject)]
pub struct RevenueLine {
    /// ISO 4217 code.
    pub currency: String,
    /// Payments less refunds, in minor units.
    pub amount_minor: super::types::Long,
}

/// An event's sales.
#[derive(SimpleObject)]
pub struct SalesReport {
    /// The event.
    pub event_id: ID,
    /// Per tier.
    pub tiers: Vec<TierSalesReport>,
}

/// Order and ticket queries.
#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// The caller's orders, newest first.
    async fn my_orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<OrderConnection, ApiError> {
        let user = caller(ctx)?;
        let first = usize::try_from(first)
            .map_err(|_| ApiError::invalid_field("first", "first must be positive"))?;
        let page = services(ctx)?
            .read_side
            .orders()
            .orders_of_user(UserId(user.user_id), &PageRequest { first, after })
            .map_err(super::query_error)?;
        Ok(OrderConnection {
            nodes: page.items.into_iter().map(Order::from).collect(),
            page_info: PageInfo {
                end_cursor: page.end_cursor,
                has_next_page: page.has_next_page,
            },
        })
    }

    /// Every ticket the caller owns.
    async fn my_tickets(&self, ctx: &Context<'_>) -> Result<Vec<Ticket>, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        Ok(services
            .read_side
            .orders()
            .tickets_of_user(UserId(user.user_id))
            .into_iter()
            .map(|view| Ticket::new(view, &services.ticket_codes))
            .collect())
    }

    /// One order: its buyer's, or any of an event for its organizer or an admin.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Order, ApiError> {
        let user = caller(ctx)?;
        let order_id: OrderId = parse_id("id", &id)?;
        let view = readable_order(services(ctx)?, user, order_id)?;
        Ok(view.into())
    }

    /// One ticket: its owner's, or any of an event for its organizer or an admin.
    async fn ticket(&self, ctx: &Context<'_>, id: ID) -> Result<Ticket, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let ticket_id: TicketId = parse_id("id", &id)?;
        let view = services
            .read_side
            .orders()
            .ticket(ticket_id)
            .ok_or_else(|| ApiError::NotFound(format!("no ticket {ticket_id}")))?;
        if view.user_id.as_uuid() != user.user_id && !manages_event(services, user, view.event_id) {
            return Err(ApiError::forbidden("this ticket is not yours"));
        }
        Ok(Ticket::new(view, &services.ticket_codes))
    }

    /// Sales of an event, per tier: for its organizer or an admin.
    #[graphql(guard = "RoleGuard::any_of(&[Role::Organizer, Role::Admin])")]
    async fn sales_report(&self, ctx: &Context<'_>, event_id: ID) -> Result<SalesReport, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let event_id: EventId = parse_id("eventId", &event_id)?;
        let sales = services
            .read_side
            .sales()
            .event_sales(event_id)
            .ok_or_else(|| ApiError::NotFound(format!("no event {event_id}")))?;
        if !(user.has_role(Role::Admin) || sales.organizer.as_uuid() == user.user_id) {
            return Err(ApiError::forbidden(
                "only the event's organizer or an admin sees its sales",
            ));
        }
        Ok(SalesReport {
            event_id: ID(event_id.to_string()),
            tiers: sales
                .tiers
                .into_iter()
                .map(|tier| TierSalesReport {
                    tier_id: ID(tier.tier_id.to_string()),
                    name: tier.name,
                    sold: tier.figures.sold,
                    held: tier.figures.held,
                    cancelled: tier.figures.cancelled,
                    revenue: tier
                        .figures
                        .revenue
                        .into_iter()
                        .map(|(currency, amount_minor)| RevenueLine {
                            currency: currency.as_str().to_owned(),
                            amount_minor: super::types::Long(amount_minor),
                        })
                        .collect(),
                })
                .collect(),
        })
    }
}

/// Order mutations.
#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Holds tickets for the caller until the returned `expiresAt`; pay with `payOrder`.
    async fn hold_tickets(
        &self,
        ctx: &Context<'_>,
        input: HoldTicketsInput,
    ) -> Result<Order, ApiError> {
        RateLimits::check_ctx(ctx, RateLimitedAction::Purchase)?;
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let (event_id, tier_id) = target(services, user, &input.event_id, &input.tier_id)?;
        let selection = selection(input.quantity, input.seats)?;
        let address = RequestContext::from_ctx(ctx)?.client_ip;
        let reservation = services.hold_limits.reserve(
            user.user_id,
            address,
            tickets_of(&selection),
            &services.hold_status(),
            chrono::Utc::now(),
        )?;
        let request = command_context(ctx, actor_of(user), Some(&input.idempotency_key));
        let receipt = services
            .commands
            .hold(&request, event_id, tier_id, selection)
            .await
            .map_err(command_error)?;
        let InventoryOutcome::Held {
            order_id,
            expires_at,
            ..
        } = receipt.outcome
        else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "a hold answered {:?}",
                receipt.outcome
            )));
        };
        reservation.placed(order_id, expires_at);
        changed_order(services, receipt.position, order_id).await
    }

    /// Pays a held order with a payment token. A declined or timed-out payment releases
    /// the hold and answers `PAYMENT_DECLINED` or `PAYMENT_TIMEOUT`.
    async fn pay_order(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        payment_token: String,
        idempotency_key: Option<String>,
    ) -> Result<Order, ApiError> {
        RateLimits::check_ctx(ctx, RateLimitedAction::Purchase)?;
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let order_id: OrderId = parse_id("orderId", &order_id)?;
        let order = own_order(services, user, order_id)?;
        let request = command_context(ctx, actor_of(user), idempotency_key.as_deref());
        let receipt = services
            .commands
            .pay(&request, order.event_id, order_id, &payment_token)
            .await
            .map_err(command_error)?;
        settled(services, receipt.outcome, receipt.position, order_id).await
    }

    /// Holds and pays in one call.
    async fn purchase_tickets(
        &self,
        ctx: &Context<'_>,
        input: PurchaseTicketsInput,
    ) -> Result<Order, ApiError> {
        RateLimits::check_ctx(ctx, RateLimitedAction::Purchase)?;
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let (event_id, tier_id) = target(services, user, &input.event_id, &input.tier_id)?;
        let selection = selection(input.quantity, input.seats)?;
        let address = RequestContext::from_ctx(ctx)?.client_ip;
        let tickets = tickets_of(&selection);
        services.hold_limits.check(
            user.user_id,
            address,
            tickets,
            &services.hold_status(),
            chrono::Utc::now(),
        )?;
        let request = command_context(ctx, actor_of(user), Some(&input.idempotency_key));
        let receipt = services
            .commands
            .purchase(&request, event_id, tier_id, selection, &input.payment_token)
            .await
            .map_err(|error| {
                metrics::counter!("purchase_outcomes_total", "outcome" => error.code())
                    .increment(1);
                command_error(error)
            })?;
        let Some(order_id) = receipt.outcome.order_id() else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "a purchase answered a webhook acknowledgement"
            )));
        };
        if let PayOutcome::Pending { .. } = receipt.outcome {
            // The hold stays until the provider reports: it counts like any other.
            let expires_at = chrono::Utc::now()
                + chrono::Duration::from_std(services.hold_ttl).unwrap_or_default();
            services
                .hold_limits
                .count(user.user_id, address, order_id, tickets, expires_at);
        }
        settled(services, receipt.outcome, receipt.position, order_id).await
    }

    /// Cancels an order: a hold is released, a paid order refunded and its tickets void.
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        idempotency_key: Option<String>,
    ) -> Result<Order, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let order_id: OrderId = parse_id("orderId", &order_id)?;
        let order = readable_order(services, user, order_id)?;
        let request = command_context(ctx, actor_of(user), idempotency_key.as_deref());
        let receipt = services
            .commands
            .cancel_order(&request, order.event_id, order_id)
            .await
            .map_err(command_error)?;
        changed_order(services, receipt.position, order_id).await
    }

    /// Checks a ticket in at the door of `eventId` by its scanned code: the event's door
    /// staff, its organizer or an admin. A forged code is refused before any lookup
    /// (`INVALID_TICKET_CODE`), a ticket of another event is `WRONG_EVENT`, and a ticket is
    /// checked in once (`ALREADY_CHECKED_IN`).
    #[graphql(guard = "RoleGuard::any_of(&[Role::Operator, Role::Organizer, Role::Admin])")]
    async fn check_in_ticket(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        code: String,
    ) -> Result<Ticket, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let event_id: EventId = parse_id("eventId", &event_id)?;
        let claims = services.ticket_codes.verify(code.trim()).map_err(|_| {
            ApiError::domain("INVALID_TICKET_CODE", "this ticket code is not genuine")
        })?;
        if claims.event_id != event_id.as_uuid() {
            return Err(ApiError::domain(
                "WRONG_EVENT",
                "this ticket is for another event",
            ));
        }
        let ticket_id = TicketId(claims.ticket_id);
        let view = services
            .read_side
            .orders()
            .ticket(ticket_id)
            .ok_or_else(|| ApiError::NotFound(format!("no ticket {ticket_id}")))?;
        if view.event_id.as_uuid() != claims.event_id
            || hex::decode(&view.secret).ok().as_deref() != Some(&claims.secret[..])
        {
            return Err(ApiError::domain(
                "INVALID_TICKET_CODE",
                "this ticket code has been replaced or belongs to another event",
            ));
        }
        let request = command_context(ctx, actor_of(user), None);
        let receipt = services
            .commands
            .check_in(&request, view.event_id, ticket_id)
            .await
            .map_err(command_error)?;
        read_your_writes(services, receipt.position).await?;
        let view = services
            .read_side
            .orders()
            .ticket(ticket_id)
            .ok_or_else(|| ApiError::NotFound(format!("no ticket {ticket_id}")))?;
        Ok(Ticket::new(view, &services.ticket_codes))
    }
}

/// Checks the event and tier ids of a hold or purchase.
fn target(
    services: &Services,
    user: &AuthUser,
    event_id: &ID,
    tier_id: &ID,
) -> Result<(EventId, TierId), ApiError> {
    let event_id: EventId = parse_id("eventId", event_id)?;
    let tier_id: TierId = parse_id("tierId", tier_id)?;
    let not_found = || ApiError::NotFound(format!("no event {event_id}"));
    let event = services
        .read_side
        .catalogue()
        .sale_target(event_id, tier_id)
        .ok_or_else(not_found)?;
    // A draft is seen only by whoever manages it, as `event` answers (see `visible_event`).
    let manages = user.has_role(Role::Admin) || user.user_id == event.organizer.as_uuid();
    if event.status == domain::inventory::EventStatus::Draft && !manages {
        return Err(not_found());
    }
    if !event.has_tier {
        return Err(ApiError::NotFound(format!(
            "event {event_id} has no tier {tier_id}"
        )));
    }
    Ok((event_id, tier_id))
}

/// How many tickets a selection holds (a refused quantity holds none).
fn tickets_of(selection: &Selection) -> u32 {
    match selection {
        Selection::Quantity { quantity } => u32::try_from(*quantity).unwrap_or(0),
        Selection::Seats { seats } => u32::try_from(seats.len()).unwrap_or(u32::MAX),
    }
}

/// A quantity or a list of seats, exactly one of them.
fn selection(quantity: Option<i32>, seats: Option<Vec<String>>) -> Result<Selection, ApiError> {
    match (quantity, seats) {
        (Some(quantity), None) if quantity > 0 => Ok(Selection::Quantity {
            quantity: i64::from(quantity),
        }),
        (Some(quantity), None) => Err(ApiError::invalid_field(
            "quantity",
            format!("quantity must be at least 1, got {quantity}"),
        )),
        (None, Some(seats)) if !seats.is_empty() => Ok(Selection::Seats { seats }),
        (None, Some(_)) => Err(ApiError::invalid_field("seats", "give at least one seat")),
        _ => Err(ApiError::invalid_input(
            "give either quantity (general admission) or seats (seated tier), not both",
        )),
    }
}

/// The order after a payment, or the payment's failure as an error.
async fn settled(
    services: &Services,
    outcome: PayOutcome,
    position: Position,
    order_id: OrderId,
) -> Result<Order, ApiError> {
    let label = match &outcome {
        PayOutcome::Confirmed { .. } => "confirmed",
        PayOutcome::Declined { .. } => "declined",
        PayOutcome::TimedOut { .. } => "timed_out",
        PayOutcome::Pending { .. } => "pending",
        PayOutcome::Refunded { .. } => "refunded",
        PayOutcome::Acknowledged => "acknowledged",
    };
    metrics::counter!("purchase_outcomes_total", "outcome" => label).increment(1);
    match outcome {
        // A pending charge is answered at its hold's position: the order as held.
        PayOutcome::Confirmed { .. } | PayOutcome::Pending { .. } | PayOutcome::Acknowledged => {
            changed_order(services, position, order_id).await
        }
        PayOutcome::Declined { reason, .. } => {
            read_your_writes(services, position).await?;
            Err(ApiError::domain(
                "PAYMENT_DECLINED",
                format!(
                    "the payment was declined ({}); the hold was released",
                    reason.code()
                ),
            ))
        }
        PayOutcome::TimedOut { .. } => {
            read_your_writes(services, position).await?;
            Err(ApiError::domain(
                "PAYMENT_TIMEOUT",
                "the payment provider did not answer in time; the hold was released",
            ))
        }
        PayOutcome::Refunded { reason, .. } => {
            read_your_writes(services, position).await?;
            Err(ApiError::domain(
                "PAYMENT_REFUNDED",
                format!("the order could no longer be paid ({reason:?}); the payment was refunded"),
            ))
        }
    }
}

/// The order after a change, once the read side shows it.
async fn changed_order(
    services: &Services,
    position: Position,
    order_id: OrderId,
) -> Result<Order, ApiError> {
    read_your_writes(services, position).await?;
    services
        .read_side
        .orders()
        .order(order_id)
        .map(Order::from)
        .ok_or_else(|| ApiError::NotFound(format!("no order {order_id}")))
}

/// An order of the caller's own.
fn own_order(
    services: &Services,
    user: &AuthUser,
    order_id: OrderId,
) -> Result<OrderView, ApiError> {
    let order = services
        .read_side
        .orders()
        .order(order_id)
        .ok_or_else(|| ApiError::NotFound(format!("no order {order_id}")))?;
    if order.user_id.as_uuid() != user.user_id {
        return Err(ApiError::forbidden("this order is not yours"));
    }
    Ok(order)
}

/// An order the caller may see: their own, or one of an event they manage.
pub(crate) fn readable_order(
    services: &Services,
    user: &AuthUser,
    order_id: OrderId,
) -> Result<OrderView, ApiError> {
    let order = services
        .read_side
        .orders()
        .order(order_id)
        .ok_or_else(|| ApiError::NotFound(format!("no order {order_id}")))?;
    if order.user_id.as_uuid() != user.user_id && !manages_event(services, user, order.event_id) {
        return Err(ApiError::forbidden("this order is not yours"));
    }
    Ok(order)
}

fn manages_event(services: &Services, user: &AuthUser, event_id: EventId) -> bool {
    services
        .read_side
        .catalogue()
        .event(event_id)
        .is_some_and(|view| manages(Some(user), &view))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::error::ErrorCode;

    proptest! {
        /// A quantity alone is accepted exactly when it is positive; seats alone when
        /// there is at least one; anything else is INVALID_INPUT, never a panic.
        #[test]
        fn selection_accepts_exactly_one_well_formed_choice(
            quantity in proptest::option::of(any::<i32>()),
            seats in proptest::option::of(proptest::collection::vec("[A-Z]-[0-9]{1,2}", 0..4)),
        ) {
            let result = selection(quantity, seats.clone());
            match (quantity, &seats) {
                (Some(q), None) if q > 0 => {
                    prop_assert_eq!(result.ok(), Some(Selection::Quantity { quantity: i64::from(q) }));
                }
                (None, Some(s)) if !s.is_empty() => {
                    prop_assert_eq!(result.ok(), Some(Selection::Seats { seats: s.clone() }));
                }
                _ => {
                    let error = result.expect_err("refused");
                    prop_assert_eq!(error.code(), ErrorCode::InvalidInput);
                }
            }
        }
    }
}
