//! Printable tickets: one A4 PDF page per ticket, with the ticket's details and a QR code
//! that encodes exactly its signed code (see `signature::TicketCodeSigner`).
//!
//! [`render`] is pure: it takes a [`TicketDocument`] and returns the bytes of the PDF, or
//! a [`RenderError`] with a stable machine code when the input is unusable. It does no IO,
//! reads no clock and embeds no font, so the same document always renders to the same
//! bytes.
//!
//! * The page uses the standard Helvetica and Courier fonts of every PDF reader. Text they
//!   cannot show (anything outside WinAnsi, the Latin-1 set) is transliterated to ASCII
//!   with `deunicode` ("Москва" prints as "Moskva"), and a character with no
//!   transliteration prints as `?`. Long values wrap and, past a few lines, end with `…`.
//! * The QR code (error correction level M) is drawn as filled vector rectangles, one per
//!   horizontal run of dark modules, inside a white quiet zone of four modules, so it stays
//!   crisp at any zoom and on any printer. It sits in a marked-content section tagged
//!   `/QrCode` so tools can find it.
//! * The code is also printed under the QR code, for a door that has to type it in.
//!
//! Layout lives in `page`, text encoding and wrapping in `text`, prices in `money`.

mod money;
mod page;
mod text;

use chrono::{DateTime, FixedOffset};
use uuid::Uuid;

/// Longest accepted text field, in characters: far beyond any real name, small enough that
/// wrapping work stays trivial.
pub const MAX_TEXT_LEN: usize = 500;

/// Longest accepted ticket code, in bytes. Today's codes have
/// `signature::TICKET_CODE_LEN` (87) characters; the slack leaves room for a longer
/// future format while keeping the QR code scannable from paper.
pub const MAX_CODE_LEN: usize = 256;

/// Everything printed on a ticket.
///
/// Text fields are free text as users typed them (any script); the renderer encodes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketDocument {
    /// Name of the ticketed event, the page's headline.
    pub event_name: String,
    /// Where the event takes place (name and address as one text).
    pub venue: String,
    /// When the event starts, in the venue's local time with its UTC offset.
    pub starts_at: DateTime<FixedOffset>,
    /// The venue's time zone name (for example `Europe/Paris`), printed beside the time;
    /// when absent the UTC offset alone is printed (`UTC` for offset zero).
    pub time_zone: Option<String>,
    /// Name of the ticket tier, such as `VIP`.
    pub tier: String,
    /// The seat (for example `A-12`) of a seated event; `None` prints "General admission".
    pub seat: Option<String>,
    /// The ticket holder's name; may be blank, the email then identifies the holder.
    pub holder_name: String,
    /// The ticket holder's email.
    pub holder_email: String,
    /// The order the ticket was bought in.
    pub order_id: Uuid,
    /// The ticket itself.
    pub ticket_id: Uuid,
    /// Price paid for this ticket, in minor units of `currency`.
    pub price_minor: u64,
    /// ISO 4217 code of the price's currency, such as `EUR` (case-insensitive).
    pub currency: String,
    /// The signed ticket code the QR code encodes, byte for byte.
    pub code: String,
}

/// Why a ticket could not be rendered. Every variant is a problem with the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A required text field is empty or only whitespace.
    #[error("the ticket's {field} is missing")]
    MissingField {
        /// The field's name in [`TicketDocument`].
        field: &'static str,
    },
    /// A text field is longer than [`MAX_TEXT_LEN`] characters.
    #[error("the ticket's {field} has {len} characters, more than the {max} allowed")]
    FieldTooLong {
        /// The field's name in [`TicketDocument`].
        field: &'static str,
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The currency is not three ASCII letters.
    #[error("{0:?} is not an ISO 4217 currency code (three letters such as EUR)")]
    InvalidCurrency(String),
    /// The ticket code is empty, too long, or has characters outside printable ASCII.
    #[error("invalid ticket code: {0}")]
    InvalidCode(&'static str),
    /// The QR encoder refused the code (cannot happen for codes within [`MAX_CODE_LEN`]).
    #[error("the ticket code cannot be encoded as a QR code: {0}")]
    QrEncoding(String),
}

impl RenderError {
    /// The stable machine code of this error, for logs and API error extensions.
    pub fn code(&self) -> &'static str {
        match self {
            RenderError::MissingField { .. } => "TICKET_FIELD_MISSING",
            RenderError::FieldTooLong { .. } => "TICKET_FIELD_TOO_LONG",
            RenderError::InvalidCurrency(_) => "TICKET_INVALID_CURRENCY",
            RenderError::InvalidCode(_) => "TICKET_INVALID_CODE",
            RenderError::QrEncoding(_) => "TICKET_QR_ENCODING",
        }
    }
}

/// Renders `ticket` as a one-page PDF.
pub fn render(ticket: &TicketDocument) -> Result<Vec<u8>, RenderError> {
    let checked = validate(ticket)?;
    let qr = QrMatrix::encode(&ticket.code)?;
    Ok(page::render(ticket, &checked, &qr))
}

/// The QR code of a ticket code: the module matrix [`render`] draws.
///
/// Exposed so that other media (a web page, an email) can show the very same code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrMatrix {
    /// Modules per side, without the quiet zone.
    width: usize,
    /// Row-major, `true` for a dark module.
    dark: Vec<bool>,
}

impl QrMatrix {
    /// Encodes `code` (checked like [`TicketDocument::code`]) at error correction level M.
    pub fn encode(code: &str) -> Result<Self, RenderError> {
        check_code(code)?;
        let qr = qrcode::QrCode::with_error_correction_level(code.as_bytes(), qrcode::EcLevel::M)
            .map_err(|e| RenderError::QrEncoding(e.to_string()))?;
        Ok(Self {
            width: qr.width(),
            dark: qr
                .to_colors()
                .into_iter()
                .map(|color| color == qrcode::Color::Dark)
                .collect(),
        })
    }

    /// Modules per side, without the quiet zone.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether the module at column `x`, row `y` is dark; `false` outside the matrix.
    pub fn is_dark(&self, x: usize, y: usize) -> bool {
        x < self.width && y < self.width && self.dark[y * self.width + x]
    }
}

/// Validated, normalised values that [`TicketDocument`] leaves loose.
pub(crate) struct Checked {
    /// Upper-case currency code.
    pub(crate) currency: String,
}

fn validate(ticket: &TicketDocument) -> Result<Checked, RenderError> {
    required("event_name", &ticket.event_name)?;
    required("venue", &ticket.venue)?;
    required("tier", &ticket.tier)?;
    required("holder_email", &ticket.holder_email)?;
    bounded("holder_name", &ticket.holder_name)?;
    if let Some(seat) = &ticket.seat {
        required("seat", seat)?;
    }
    if let Some(zone) = &ticket.time_zone {
        required("time_zone", zone)?;
    }
    let currency = ticket.currency.trim();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(RenderError::InvalidCurrency(
            ticket.currency.chars().take(16).collect(),
        ));
    }
    check_code(&ticket.code)?;
    Ok(Checked {
        currency: currency.to_ascii_uppercase(),
    })
}

fn required(field: &'static str, value: &str) -> Result<(), RenderError> {
    if value.trim().is_empty() {
        return Err(RenderError::MissingField { field });
    }
    bounded(field, value)
}

fn bounded(field: &'static str, value: &str) -> Result<(), RenderError> {
    let len = value.chars().count();
    if len > MAX_TEXT_LEN {
        return Err(RenderError::FieldTooLong {
            field,
            len,
            max: MAX_TEXT_LEN,
        });
    }
    Ok(())
}

fn check_code(code: &str) -> Result<(), RenderError> {
    if code.is_empty() {
        return Err(RenderError::InvalidCode("the code is empty"));
    }
    if code.len() > MAX_CODE_LEN {
        return Err(RenderError::InvalidCode("the code is too long"));
    }
    if !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RenderError::InvalidCode(
            "the code has characters outside printable ASCII",
        ));
    }
    Ok(())
}
