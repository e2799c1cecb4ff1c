//! `GET /tickets/{id}.pdf`: a ticket as a printable one-page PDF, with the same signed
//! code in its QR code as the `Ticket.code` GraphQL field.
//!
//! Only the ticket's owner and administrators may fetch it; anyone else is told it does
//! not exist, so ticket ids cannot be probed.

use std::sync::Arc;

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use domain::TicketId;
use projections::TicketView;

use crate::{
    auth::{AuthError, Role},
    error::ApiError,
    schema::{Services, types::ticket_code},
};

/// The path of a ticket's PDF, as `Ticket.pdfUrl` reports it.
pub fn pdf_path(ticket_id: &str) -> String {
    format!("/tickets/{ticket_id}.pdf")
}

/// The route serving printable tickets from `services`.
pub fn router(services: Arc<Services>) -> Router {
    Router::new().route(
        "/tickets/{file}",
        get(move |headers: HeaderMap, Path(file): Path<String>| {
            let services = Arc::clone(&services);
            async move {
                match ticket_pdf(&services, &headers, &file).await {
                    Ok(response) => response,
                    Err(error) => error.into_response(),
                }
            }
        }),
    )
}

async fn ticket_pdf(
    services: &Services,
    headers: &HeaderMap,
    file: &str,
) -> Result<Response, ApiError> {
    let user = services
        .jwt
        .authenticate_headers(headers)?
        .ok_or(ApiError::Unauthenticated(AuthError::Missing))?;
    let not_found = || ApiError::NotFound(format!("no ticket {file}"));
    let ticket_id: TicketId = file
        .strip_suffix(".pdf")
        .and_then(|id| id.parse::<uuid::Uuid>().ok())
        .map(TicketId::from)
        .ok_or_else(not_found)?;
    let read = services.read_side.as_ref();
    let view = read
        .orders()
        .ticket(ticket_id)
        .filter(|view| view.user_id.as_uuid() == user.user_id || user.has_role(Role::Admin))
        .ok_or_else(not_found)?;
    if view.status == domain::inventory::TicketStatus::Void {
        // A void ticket admits nobody: printing a scannable one would only mislead.
        return Err(ApiError::domain(
            "TICKET_VOID",
            format!(
                "ticket {ticket_id} is void (its order was cancelled): it has no printable form"
            ),
        ));
    }
    let document = document(services, &view)?;
    let pdf = tokio::task::spawn_blocking(move || ticket_pdf::render(&document))
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| ApiError::internal(anyhow::anyhow!("{}: {error}", error.code())))?;
    let disposition =
        HeaderValue::from_str(&format!("inline; filename=\"ticket-{ticket_id}.pdf\""))
            .map_err(ApiError::internal)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pdf"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
        ],
        pdf,
    )
        .into_response())
}

/// What the ticket says, gathered from the read models. A ticket whose order, event or
/// holder the read side does not know is an internal inconsistency, not a missing ticket.
fn document(
    services: &Services,
    view: &TicketView,
) -> Result<ticket_pdf::TicketDocument, ApiError> {
    let read = services.read_side.as_ref();
    let missing = |what: &str| {
        ApiError::internal(anyhow::anyhow!(
            "ticket {} has no {what} in the read models",
            view.ticket_id
        ))
    };
    let order = read
        .orders()
        .order(view.order_id)
        .ok_or_else(|| missing("order"))?;
    let event = read
        .catalogue()
        .event(view.event_id)
        .ok_or_else(|| missing("event"))?;
    let holder = read
        .accounts()
        .by_id(view.user_id)
        .ok_or_else(|| missing("holder"))?;
    let tier = event
        .tiers
        .iter()
        .find(|tier| tier.tier_id == view.tier_id)
        .map_or_else(|| view.tier_id.to_string(), |tier| tier.name.clone());
    // The order's total was fixed when held, for all its tickets alike.
    let price_minor = order.total.amount_minor / u64::from(order.quantity.max(1));
    Ok(ticket_pdf::TicketDocument {
        event_name: event.details.name,
        venue: event.details.venue,
        starts_at: event.details.starts_at.fixed_offset(),
        time_zone: None,
        tier,
        seat: view.seat.as_ref().map(|seat| seat.as_str().to_owned()),
        holder_name: holder.display_name,
        holder_email: holder.email.as_str().to_owned(),
        order_id: view.order_id.as_uuid(),
        ticket_id: view.ticket_id.as_uuid(),
        price_minor,
        currency: order.total.currency.as_str().to_owned(),
        code: ticket_code(view, &services.ticket_codes),
    })
}
