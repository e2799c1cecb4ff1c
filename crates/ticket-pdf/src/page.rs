//! The page layout: a ticket card with a dark header, the details on the left, the QR
//! code on the right and a stub with the order and ticket ids, on an A4 page.
//!
//! Coordinates are PDF points (1/72 inch) from the bottom-left corner of the page. Every
//! text block has a fixed maximum number of lines, so the layout never overflows whatever
//! the input.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::money;
use crate::text::{self, Font, WinAnsi};
use crate::{Checked, QrMatrix, TicketDocument};

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 40.0;
const CARD_LEFT: f32 = MARGIN;
const CARD_RIGHT: f32 = PAGE_WIDTH - MARGIN;
const CARD_TOP: f32 = PAGE_HEIGHT - MARGIN;
const CARD_BOTTOM: f32 = 270.0;
const HEADER_HEIGHT: f32 = 100.0;
const PADDING: f32 = 22.0;
/// Side of the QR code including its quiet zone: about 7 cm, easy to scan from paper or
/// a phone screen.
const QR_SIZE: f32 = 196.0;
/// Modules of white around the QR code, as the QR specification requires.
const QUIET_ZONE: usize = 4;
const QR_LEFT: f32 = CARD_RIGHT - PADDING - QR_SIZE;
const BODY_TOP: f32 = CARD_TOP - HEADER_HEIGHT - PADDING;
const DETAILS_LEFT: f32 = CARD_LEFT + PADDING;
const DETAILS_WIDTH: f32 = QR_LEFT - 20.0 - DETAILS_LEFT;
const STUB_RULE: f32 = 338.0;

const INK: [f32; 3] = [0.10, 0.12, 0.20];
const MUTED: [f32; 3] = [0.42, 0.45, 0.52];
const HEADER: [f32; 3] = [0.12, 0.17, 0.33];

const CODE_FONT_SIZE: f32 = 7.0;

/// Writes the PDF of a validated ticket.
pub(crate) fn render(ticket: &TicketDocument, checked: &Checked, qr: &QrMatrix) -> Vec<u8> {
    let catalog_id = Ref::new(1);
    let page_tree_id = Ref::new(2);
    let page_id = Ref::new(3);
    let content_id = Ref::new(4);
    let regular_id = Ref::new(5);
    let bold_id = Ref::new(6);
    let mono_id = Ref::new(7);
    let info_id = Ref::new(8);

    let mut pdf = Pdf::new();
    pdf.catalog(catalog_id).pages(page_tree_id);
    pdf.pages(page_tree_id).kids([page_id]).count(1);
    let mut page = pdf.page(page_id);
    page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
    page.parent(page_tree_id);
    page.contents(content_id);
    let mut resources = page.resources();
    resources
        .fonts()
        .pair(font_name(Font::Regular), regular_id)
        .pair(font_name(Font::Bold), bold_id)
        .pair(font_name(Font::Mono), mono_id);
    resources.finish();
    page.finish();

    for (id, base) in [
        (regular_id, &b"Helvetica"[..]),
        (bold_id, b"Helvetica-Bold"),
        (mono_id, b"Courier"),
    ] {
        pdf.type1_font(id)
            .base_font(Name(base))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }

    let title: String = format!("Ticket: {}", ticket.event_name.trim())
        .chars()
        .take(200)
        .collect();
    pdf.document_info(info_id)
        .title(TextStr(&title))
        .producer(TextStr("ticketing"));

    let content = draw(ticket, checked, qr);
    pdf.stream(content_id, &content.finish());
    pdf.finish()
}

fn font_name(font: Font) -> Name<'static> {
    match font {
        Font::Regular => Name(b"F1"),
        Font::Bold => Name(b"F2"),
        Font::Mono => Name(b"F3"),
    }
}

fn draw(ticket: &TicketDocument, checked: &Checked, qr: &QrMatrix) -> Content {
    let mut c = Content::new();

    // The card: a thin outline and a dark header band.
    c.set_stroke_rgb(MUTED[0], MUTED[1], MUTED[2]);
    c.set_line_width(0.8);
    c.rect(
        CARD_LEFT,
        CARD_BOTTOM,
        CARD_RIGHT - CARD_LEFT,
        CARD_TOP - CARD_BOTTOM,
    );
    c.stroke();
    fill(&mut c, HEADER);
    c.rect(
        CARD_LEFT,
        CARD_TOP - HEADER_HEIGHT,
        CARD_RIGHT - CARD_LEFT,
        HEADER_HEIGHT,
    );
    c.fill_nonzero();

    fill(&mut c, [1.0, 1.0, 1.0]);
    line(
        &mut c,
        Font::Bold,
        8.0,
        DETAILS_LEFT,
        CARD_TOP - 24.0,
        b"ADMIT ONE  \x95  TICKET",
    );
    let name = text::encode(&ticket.event_name);
    let headline = text::wrap(
        &name,
        Font::Bold,
        20.0,
        CARD_RIGHT - CARD_LEFT - 2.0 * PADDING,
        2,
    );
    // One line sits lower in the band than the first of two.
    let mut y = if headline.len() > 1 {
        CARD_TOP - 52.0
    } else {
        CARD_TOP - 64.0
    };
    for l in &headline {
        line(&mut c, Font::Bold, 20.0, DETAILS_LEFT, y, l);
        y -= 23.0;
    }

    // The details, label above value, down the left column.
    let mut details = Details {
        c: &mut c,
        y: BODY_TOP,
    };
    details.field(b"DATE AND TIME", &when(ticket), 2);
    details.field(b"VENUE", &[text::encode(&ticket.venue)], 3);
    details.field(b"TIER", &[text::encode(&ticket.tier)], 2);
    let seat = match &ticket.seat {
        Some(seat) => text::encode(seat),
        None => b"General admission".to_vec(),
    };
    details.field(b"SEAT", &[seat], 1);
    let mut holder = Vec::new();
    if !ticket.holder_name.trim().is_empty() {
        holder.push(text::encode(&ticket.holder_name));
    }
    holder.push(text::encode(&ticket.holder_email));
    details.field(b"TICKET HOLDER", &holder, 4);
    let price = money::format(ticket.price_minor, &checked.currency);
    details.field(b"PRICE PAID", &[price.into_bytes()], 1);

    draw_qr(&mut c, qr);
    // The code in characters, for a door that has to type it.
    fill(&mut c, INK);
    let per_line = (QR_SIZE / (0.6 * CODE_FONT_SIZE)).floor().max(1.0) as usize;
    let mut y = BODY_TOP - QR_SIZE - 12.0;
    for chunk in ticket.code.as_bytes().chunks(per_line) {
        line(&mut c, Font::Mono, CODE_FONT_SIZE, QR_LEFT, y, chunk);
        y -= 9.0;
    }
    fill(&mut c, MUTED);
    line(
        &mut c,
        Font::Regular,
        8.0,
        QR_LEFT,
        y - 4.0,
        b"Scan this code at the entrance.",
    );

    // The stub: a dashed tear line, then the ids support staff ask for.
    c.set_stroke_rgb(MUTED[0], MUTED[1], MUTED[2]);
    c.set_dash_pattern([4.0, 3.0], 0.0);
    c.move_to(CARD_LEFT, STUB_RULE);
    c.line_to(CARD_RIGHT, STUB_RULE);
    c.stroke();
    c.set_dash_pattern([], 0.0);
    let columns = [
        (DETAILS_LEFT, &b"ORDER"[..], ticket.order_id),
        (DETAILS_LEFT + 250.0, b"TICKET", ticket.ticket_id),
    ];
    for (x, label, id) in columns {
        fill(&mut c, MUTED);
        line(&mut c, Font::Bold, 7.5, x, STUB_RULE - 24.0, label);
        fill(&mut c, INK);
        let id = id.hyphenated().to_string();
        line(&mut c, Font::Mono, 9.5, x, STUB_RULE - 38.0, id.as_bytes());
    }

    // Under the card: how the ticket is used.
    fill(&mut c, MUTED);
    let notice = text::encode(
        "Present this page, printed or on a screen, at the entrance. The code admits one \
         entry: it is checked in the first time it is scanned, and any copy of it is refused \
         after that. Keep it private and do not share pictures of it.",
    );
    let mut y = CARD_BOTTOM - 20.0;
    for l in text::wrap(&notice, Font::Regular, 8.5, CARD_RIGHT - CARD_LEFT, 4) {
        line(&mut c, Font::Regular, 8.5, CARD_LEFT, y, &l);
        y -= 11.0;
    }
    c
}

/// The start date and time: the date on one line, the time and its zone on the next.
fn when(ticket: &TicketDocument) -> Vec<WinAnsi> {
    let at = ticket.starts_at;
    let date = at.format("%A %-d %B %Y").to_string();
    let offset = if at.offset().local_minus_utc() == 0 {
        "UTC".to_owned()
    } else {
        at.format("UTC%:z").to_string()
    };
    let time = match &ticket.time_zone {
        // The offset before the zone name, so that a long name is what gets truncated.
        Some(zone) => format!("{} {offset} ({})", at.format("%H:%M"), zone.trim()),
        None => format!("{} {offset}", at.format("%H:%M")),
    };
    vec![text::encode(&date), text::encode(&time)]
}

/// Lays out labelled values down the details column.
struct Details<'a> {
    /// The page content being written.
    c: &'a mut Content,
    /// Baseline of the next label.
    y: f32,
}

impl Details<'_> {
    const VALUE_SIZE: f32 = 11.5;
    const LEADING: f32 = 14.5;

    /// Writes `label` and then each paragraph of `values`, wrapped, using at most
    /// `max_lines` lines in all (later paragraphs get what earlier ones left).
    fn field(&mut self, label: &[u8], values: &[WinAnsi], max_lines: usize) {
        fill(self.c, MUTED);
        line(self.c, Font::Bold, 7.5, DETAILS_LEFT, self.y, label);
        self.y -= 15.0;
        fill(self.c, INK);
        let mut left = max_lines;
        for (i, value) in values.iter().enumerate() {
            // Keep one line for each paragraph still to come.
            let still_to_come = values.len() - i - 1;
            let budget = left.saturating_sub(still_to_come).max(1);
            let lines = text::wrap(
                value,
                Font::Regular,
                Self::VALUE_SIZE,
                DETAILS_WIDTH,
                budget,
            );
            for l in &lines {
                line(
                    self.c,
                    Font::Regular,
                    Self::VALUE_SIZE,
                    DETAILS_LEFT,
                    self.y,
                    l,
                );
                self.y -= Self::LEADING;
            }
            left = left.saturating_sub(lines.len());
        }
        self.y -= 9.0;
    }
}

/// Draws the QR code with its quiet zone, one filled rectangle per run of dark modules.
fn draw_qr(c: &mut Content, qr: &QrMatrix) {
    let modules = qr.width() + 2 * QUIET_ZONE;
    let module = QR_SIZE / modules as f32;
    let top = BODY_TOP;

    fill(c, [1.0, 1.0, 1.0]);
    c.rect(QR_LEFT, top - QR_SIZE, QR_SIZE, QR_SIZE);
    c.fill_nonzero();

    c.begin_marked_content(Name(b"QrCode"));
    c.save_state();
    // One unit is one module, rows counted downwards from the top-left module, as in the
    // QR specification; the rectangles below are then plain integers.
    let origin = module * QUIET_ZONE as f32;
    c.transform([module, 0.0, 0.0, -module, QR_LEFT + origin, top - origin]);
    c.set_fill_gray(0.0);
    for y in 0..qr.width() {
        let mut x = 0;
        while x < qr.width() {
            if !qr.is_dark(x, y) {
                x += 1;
                continue;
            }
            let start = x;
            while x < qr.width() && qr.is_dark(x, y) {
                x += 1;
            }
            c.rect(start as f32, y as f32, (x - start) as f32, 1.0);
        }
    }
    c.fill_nonzero();
    c.restore_state();
    c.end_marked_content();
}

fn fill(c: &mut Content, [r, g, b]: [f32; 3]) {
    c.set_fill_rgb(r, g, b);
}

/// Shows one line of already encoded text with its baseline at (`x`, `y`).
fn line(c: &mut Content, font: Font, size: f32, x: f32, y: f32, text: &[u8]) {
    c.begin_text();
    c.set_font(font_name(font), size);
    c.next_line(x, y);
    c.show(Str(text));
    c.end_text();
}
