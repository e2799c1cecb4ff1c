//! The object types the schema's features share, each a view of a read model.

use async_graphql::{
    ComplexObject, Context, Enum, ID, Object, SimpleObject, dataloader::DataLoader,
};
use chrono::{DateTime, Utc};
use domain::inventory::{
    EventStatus as DomainEventStatus, OrderStatus as DomainOrderStatus,
    TicketStatus as DomainTicketStatus,
};
use projections::catalogue::TierAvailability;
use projections::{
    AccountView, Availability as AvailabilityView, EventView, OrderView, SeatStatus, TicketView,
};

use super::{EventLoader, api_role, services};
use crate::{auth::Role, error::ApiError};

/// Where an event is in its life.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventStatus {
    /// Created, visible to its organizer only, not selling.
    Draft,
    /// Visible; sells within its sales window.
    Published,
    /// Cancelled: nothing sells, every order was cancelled.
    Cancelled,
}

impl From<DomainEventStatus> for EventStatus {
    fn from(status: DomainEventStatus) -> Self {
        match status {
            DomainEventStatus::Draft => Self::Draft,
            DomainEventStatus::Published => Self::Published,
            DomainEventStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<EventStatus> for DomainEventStatus {
    fn from(status: EventStatus) -> Self {
        match status {
            EventStatus::Draft => Self::Draft,
            EventStatus::Published => Self::Published,
            EventStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// Where an order is in its life.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    /// A live hold: its tickets are reserved until it expires.
    Held,
    /// Paid: its tickets are issued.
    Paid,
    /// Released before paying.
    Released,
    /// Expired unpaid.
    Expired,
    /// Cancelled; a paid order is refunded and its tickets are void.
    Cancelled,
}

impl From<DomainOrderStatus> for OrderStatus {
    fn from(status: DomainOrderStatus) -> Self {
        match status {
            DomainOrderStatus::Held => Self::Held,
            DomainOrderStatus::Paid => Self::Paid,
            DomainOrderStatus::Released => Self::Released,
            DomainOrderStatus::Expired => Self::Expired,
            DomainOrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// Where the refund of a cancelled paid order stands.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundStatus {
    /// Owed: the payment provider has not given the money back yet (it is retried until
    /// it has).
    Owed,
    /// The money was given back.
    Refunded,
}

/// Where a ticket is in its life.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketStatus {
    /// Issued and not used.
    Valid,
    /// Used at the door.
    CheckedIn,
    /// Its order was cancelled.
    Void,
}

/// Whether a seat can be bought.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatState {
    /// Free to hold.
    Available,
    /// In a live hold.
    Held,
    /// Sold.
    Sold,
}

impl From<SeatStatus> for SeatState {
    fn from(status: SeatStatus) -> Self {
        match status {
            SeatStatus::Available => Self::Available,
            SeatStatus::Held => Self::Held,
            SeatStatus::Sold => Self::Sold,
        }
    }
}

/// A 64-bit integer, for values that outgrow GraphQL's 32-bit `Int`: store positions,
/// stream versions, notification ids and amounts of money. Sent as a JSON number; a JSON
/// string of digits is accepted too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Long(pub i64);

#[async_graphql::Scalar]
impl async_graphql::ScalarType for Long {
    fn parse(value: async_graphql::Value) -> async_graphql::InputValueResult<Self> {
        match &value {
            async_graphql::Value::Number(n) => n
                .as_i64()
                .map(Long)
                .ok_or_else(|| async_graphql::InputValueError::custom("not a 64-bit integer")),
            async_graphql::Value::String(s) => s
                .parse::<i64>()
                .map(Long)
                .map_err(|_| async_graphql::InputValueError::custom("not a 64-bit integer")),
            _ => Err(async_graphql::InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> async_graphql::Value {
        async_graphql::Value::Number(self.0.into())
    }
}

impl From<u64> for Long {
    fn from(value: u64) -> Self {
        Self(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl Long {
    /// The value as an unsigned one (positions, versions), or `INVALID_INPUT` naming
    /// `field` when negative.
    pub fn unsigned(self, field: &str) -> Result<u64, ApiError> {
        u64::try_from(self.0)
            .map_err(|_| ApiError::invalid_field(field, format!("{field} cannot be negative")))
    }
}

/// An amount of money.
#[derive(SimpleObject, Clone, Debug)]
pub struct Money {
    /// Amount in minor units (cents for EUR).
    pub amount_minor: Long,
    /// ISO 4217 currency code.
    pub currency: String,
}

impl From<domain::money::Money> for Money {
    fn from(money: domain::money::Money) -> Self {
        Self {
            amount_minor: Long::from(money.amount_minor),
            currency: money.currency.as_str().to_owned(),
        }
    }
}

/// A ticket tier with its live counts.
pub struct Tier(pub TierAvailability);

/// A ticket tier with its price and live counts.
#[Object]
impl Tier {
    /// The tier's id.
    async fn id(&self) -> ID {
        ID(self.0.tier_id.to_string())
    }
    /// Display name (Standard, VIP...).
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Price of one ticket.
    async fn price(&self) -> Money {
        self.0.price.into()
    }
    /// Tickets in the tier.
    async fn capacity(&self) -> u32 {
        self.0.capacity
    }
    /// Tickets sold.
    async fn sold(&self) -> u32 {
        self.0.sold
    }
    /// Tickets in live holds.
    async fn held(&self) -> u32 {
        self.0.held
    }
    /// Tickets that can be held now: capacity - sold - held.
    async fn available(&self) -> u32 {
        self.0.available
    }
    /// Whether the tier sells named seats rather than quantities.
    async fn seated(&self) -> bool {
        self.0.seated
    }
}

/// A seat of the seat map with its state.
#[derive(SimpleObject, Clone, Debug)]
pub struct Seat {
    /// The seat id, such as `A-12`.
    pub seat: String,
    /// Its tier.
    pub tier_id: ID,
    /// Whether it can be bought.
    pub state: SeatState,
}

impl From<projections::SeatView> for Seat {
    fn from(seat: projections::SeatView) -> Self {
        Self {
            seat: seat.seat.as_str().to_owned(),
            tier_id: ID(seat.tier_id.to_string()),
            state: seat.status.into(),
        }
    }
}

/// The live availability of an event.
pub struct Availability(pub std::sync::Arc<AvailabilityView>);

/// The live availability of an event: counts per tier and the state of every seat.
#[Object]
impl Availability {
    /// The event.
    async fn event_id(&self) -> ID {
        ID(self.0.event_id.to_string())
    }
    /// Global store position of the last change it reflects (increases with every change).
    async fn position(&self) -> Long {
        Long::from(self.0.position.0)
    }
    /// The event's status.
    async fn status(&self) -> EventStatus {
        self.0.status.into()
    }
    /// Counts per tier.
    async fn tiers(&self) -> Vec<Tier> {
        self.0.tiers.iter().cloned().map(Tier).collect()
    }
    /// Tickets available over every tier.
    async fn total_available(&self) -> Long {
        Long::from(
            self.0
                .tiers
                .iter()
                .map(|t| u64::from(t.available))
                .sum::<u64>(),
        )
    }
    /// The states of up to `first` seats (at most 5,000) from the `offset`-th on, in seat
    /// map order (empty for general admission): page through a large seat map.
    #[graphql(complexity = "list_complexity(first, child_complexity)")]
    async fn seats(
        &self,
        #[graphql(default = 1000)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<Vec<Seat>, ApiError> {
        let (first, offset) = seat_page(first, offset)?;
        Ok(self
            .0
            .seats()
            .skip(offset)
            .take(first)
            .map(Seat::from)
            .collect())
    }
}

/// Most seats one `seats` page returns.
pub const MAX_SEAT_PAGE: i32 = 5000;

/// The complexity of a page of `first` plain entries (seats, history entries): a tenth of
/// what as many objects with their own resolvers would cost (their fields are plain
/// values), so a page of a few thousand seats fits the default limit, and a query cannot
/// alias its way to millions.
pub(crate) fn list_complexity(first: i32, child_complexity: usize) -> usize {
    usize::try_from(first.clamp(0, MAX_SEAT_PAGE))
        .unwrap_or(0)
        .saturating_mul(child_complexity)
        / 10
        + 1
}

/// Checks a seat page's arguments.
fn seat_page(first: i32, offset: i32) -> Result<(usize, usize), ApiError> {
    if !(1..=MAX_SEAT_PAGE).contains(&first) {
        return Err(ApiError::invalid_field(
            "first",
            format!("first must be between 1 and {MAX_SEAT_PAGE}"),
        ));
    }
    let offset = usize::try_from(offset)
        .map_err(|_| ApiError::invalid_field("offset", "offset cannot be negative"))?;
    Ok((first as usize, offset))
}

/// The window in which tickets sell.
#[derive(SimpleObject, Clone, Debug)]
pub struct SalesWindow {
    /// Sales open at.
    pub opens_at: DateTime<Utc>,
    /// Sales close at.
    pub closes_at: DateTime<Utc>,
}

/// A ticketed event.
pub struct Event(pub EventView);

/// A ticketed event: details, tiers with live counts, and seats for seated events.
#[Object]
impl Event {
    /// The event's id.
    async fn id(&self) -> ID {
        ID(self.0.event_id.to_string())
    }
    /// Name.
    async fn name(&self) -> &str {
        &self.0.details.name
    }
    /// Description.
    async fn description(&self) -> &str {
        &self.0.details.description
    }
    /// Venue.
    async fn venue(&self) -> &str {
        &self.0.details.venue
    }
    /// When it starts.
    async fn starts_at(&self) -> DateTime<Utc> {
        self.0.details.starts_at
    }
    /// When it ends.
    async fn ends_at(&self) -> DateTime<Utc> {
        self.0.details.ends_at
    }
    /// Image references.
    async fn images(&self) -> &[String] {
        &self.0.details.images
    }
    /// Draft, published or cancelled.
    async fn status(&self) -> EventStatus {
        self.0.status.into()
    }
    /// The organizer's user id.
    async fn organizer_id(&self) -> ID {
        ID(self.0.organizer.to_string())
    }
    /// When tickets sell (none: from publication until the event ends).
    async fn sales_window(&self) -> Option<SalesWindow> {
        self.0.sales_window.map(|w| SalesWindow {
            opens_at: w.opens_at,
            closes_at: w.closes_at,
        })
    }
    /// Most tickets one buyer may hold or own.
    async fn per_user_limit(&self) -> Option<u32> {
        self.0.per_user_limit
    }
    /// The user ids of the event's door staff (its organizer and admins only).
    async fn door_staff_ids(&self, ctx: &Context<'_>) -> Result<Vec<ID>, ApiError> {
        if !super::catalogue::manages(super::maybe_caller(ctx), &self.0) {
            return Err(ApiError::forbidden(
                "only the event's organizer or an admin sees its door staff",
            ));
        }
        Ok(self
            .0
            .door_staff
            .iter()
            .map(|u| ID(u.to_string()))
            .collect())
    }
    /// Tiers with their live counts.
    async fn tiers(&self) -> Vec<Tier> {
        self.0.tiers.iter().cloned().map(Tier).collect()
    }
    /// Number of seats in the seat map (0 for general admission).
    async fn seat_count(&self) -> u32 {
        u32::try_from(self.0.seat_count).unwrap_or(u32::MAX)
    }
    /// Up to `first` seats (at most 5,000) with their state from the `offset`-th on, in
    /// seat map order (empty for general admission): page through a large seat map with
    /// `seatCount`.
    #[graphql(complexity = "list_complexity(first, child_complexity)")]
    async fn seats(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 1000)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> Result<Vec<Seat>, ApiError> {
        let (first, offset) = seat_page(first, offset)?;
        if self.0.seat_count == 0 {
            return Ok(Vec::new());
        }
        let seats = services(ctx)?
            .read_side
            .catalogue()
            .seat_page(self.0.event_id, offset, first)
            .unwrap_or_default();
        Ok(seats.into_iter().map(Seat::from).collect())
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// An order: a hold, or tickets bought.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Order {
    /// The order's id.
    pub id: ID,
    /// The event's id.
    pub event_id: ID,
    /// The tier bought from.
    pub tier_id: ID,
    /// Number of tickets.
    pub quantity: u32,
    /// The seats, for a seated tier.
    pub seats: Vec<String>,
    /// Where it stands.
    pub status: OrderStatus,
    /// What it costs.
    pub total: Money,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When the hold lapses unless paid.
    pub expires_at: DateTime<Utc>,
    /// When it was paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// When it was released, expired or cancelled.
    pub closed_at: Option<DateTime<Utc>>,
    /// What is refunded after a cancellation.
    pub refund: Option<Money>,
    /// Whether that refund was made yet (none when nothing is owed).
    pub refund_status: Option<RefundStatus>,
    /// When the refund was made.
    pub refunded_at: Option<DateTime<Utc>>,
    /// The read model's order, for the fields resolved from it.
    #[graphql(skip)]
    pub view: OrderView,
}

#[ComplexObject]
impl Order {
    /// The event (batched across a list of orders).
    async fn event(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Event>> {
        let loader = ctx.data::<DataLoader<EventLoader>>()?;
        let event = loader
            .load_one(self.view.event_id)
            .await
            .map_err(|error| error.as_ref().to_graphql_error())?;
        Ok(event.map(Event))
    }

    /// The tickets issued (empty unless paid).
    async fn tickets(&self, ctx: &Context<'_>) -> Result<Vec<Ticket>, ApiError> {
        let services = services(ctx)?;
        Ok(self
            .view
            .tickets
            .iter()
            .map(|t| {
                Ticket::new(
                    TicketView {
                        ticket_id: t.ticket_id,
                        order_id: self.view.order_id,
                        event_id: self.view.event_id,
                        user_id: self.view.user_id,
                        tier_id: self.view.tier_id,
                        seat: t.seat.clone(),
                        status: t.status,
                        secret: t.secret.clone(),
                    },
                    &services.ticket_codes,
                )
            })
            .collect())
    }
}

impl From<OrderView> for Order {
    fn from(view: OrderView) -> Self {
        Self {
            id: ID(view.order_id.to_string()),
            event_id: ID(view.event_id.to_string()),
            tier_id: ID(view.tier_id.to_string()),
            quantity: view.quantity,
            seats: view.seats.iter().map(|s| s.as_str().to_owned()).collect(),
            status: view.status.into(),
            total: view.total.into(),
            placed_at: view.placed_at,
            expires_at: view.expires_at,
            paid_at: view.paid_at,
            closed_at: view.closed_at,
            refund: view.refund.map(Money::from),
            refund_status: match (&view.refund, &view.refunded_at) {
                (None, _) => None,
                (Some(_), None) => Some(RefundStatus::Owed),
                (Some(_), Some(_)) => Some(RefundStatus::Refunded),
            },
            refunded_at: view.refunded_at,
            view,
        }
    }
}

/// A ticket.
#[derive(SimpleObject, Clone, Debug)]
pub struct Ticket {
    /// The ticket's id.
    pub id: ID,
    /// Its order.
    pub order_id: ID,
    /// Its event.
    pub event_id: ID,
    /// Its tier.
    pub tier_id: ID,
    /// Its seat, for a seated tier.
    pub seat: Option<String>,
    /// Valid, checked in or void.
    pub status: TicketStatus,
    /// When it was checked in.
    pub checked_in_at: Option<DateTime<Utc>>,
    /// The signed code the door scans (its QR code's content).
    pub code: String,
    /// Path of the printable PDF ticket on this service (`Authorization: Bearer` needed).
    pub pdf_url: String,
}

impl Ticket {
    /// The ticket of a view, with its signed code.
    pub fn new(view: TicketView, signer: &signature::TicketCodeSigner) -> Self {
        let code = ticket_code(&view, signer);
        let (status, checked_in_at) = match view.status {
            DomainTicketStatus::Valid => (TicketStatus::Valid, None),
            DomainTicketStatus::CheckedIn { at } => (TicketStatus::CheckedIn, Some(at)),
            DomainTicketStatus::Void => (TicketStatus::Void, None),
        };
        Self {
            id: ID(view.ticket_id.to_string()),
            order_id: ID(view.order_id.to_string()),
            event_id: ID(view.event_id.to_string()),
            tier_id: ID(view.tier_id.to_string()),
            seat: view.seat.map(|s| s.as_str().to_owned()),
            status,
            checked_in_at,
            code,
            pdf_url: crate::printable::pdf_path(&view.ticket_id.to_string()),
        }
    }
}

/// The signed code of a ticket: what its QR code holds, on screen and on paper.
pub fn ticket_code(view: &TicketView, signer: &signature::TicketCodeSigner) -> String {
    let mut secret = [0u8; 16];
    // Secrets are 32 hex characters; anything else gets a code no door accepts.
    if let Ok(bytes) = hex::decode(&view.secret)
        && bytes.len() == secret.len()
    {
        secret.copy_from_slice(&bytes);
    }
    signer.issue(&signature::TicketClaims {
        ticket_id: view.ticket_id.as_uuid(),
        event_id: view.event_id.as_uuid(),
        secret,
    })
}

/// A user account.
#[derive(SimpleObject, Clone, Debug)]
pub struct User {
    /// The user's id.
    pub id: ID,
    /// Email (normalised).
    pub email: String,
    /// The name shown to others.
    pub display_name: String,
    /// What the user may do.
    pub roles: Vec<Role>,
    /// When the account was opened.
    pub registered_at: DateTime<Utc>,
}

impl From<AccountView> for User {
    fn from(view: AccountView) -> Self {
        Self {
            id: ID(view.user_id.to_string()),
            email: view.email.as_str().to_owned(),
            display_name: view.display_name,
            roles: view.roles.into_iter().map(api_role).collect(),
            registered_at: view.registered_at,
        }
    }
}
