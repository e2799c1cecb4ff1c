//! Black-box tests of `ticket_pdf::render`: the output is a PDF other tools read, it shows
//! the ticket's details, and its QR code scans back to exactly the signed code: from the
//! vector rectangles in the PDF, and (when `pdftoppm` is installed) from a raster of the
//! real page.

use chrono::{DateTime, FixedOffset, TimeZone};
use lopdf::Document;
use lopdf::content::Content;
use proptest::prelude::*;
use signature::{TicketClaims, TicketCodeSigner};
use ticket_pdf::{MAX_CODE_LEN, MAX_TEXT_LEN, QrMatrix, RenderError, TicketDocument, render};
use uuid::Uuid;

fn signed_code() -> String {
    let signer = TicketCodeSigner::new(b"a test key that is long enough for hmac");
    signer.issue(&TicketClaims {
        ticket_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0042),
        event_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0007),
        secret: [7; 16],
    })
}

fn starts_at() -> DateTime<FixedOffset> {
    FixedOffset::east_opt(3600)
        .and_then(|paris| paris.with_ymd_and_hms(2026, 3, 14, 20, 0, 0).single())
        .expect("a valid date")
}

fn ticket() -> TicketDocument {
    TicketDocument {
        event_name: "Rust Nation Live: The Borrow Checker Tour".to_owned(),
        venue: "Le Zénith, 211 avenue Jean Jaurès, 75019 Paris".to_owned(),
        starts_at: starts_at(),
        time_zone: Some("Europe/Paris".to_owned()),
        tier: "VIP".to_owned(),
        seat: Some("A-12".to_owned()),
        holder_name: "Ada Lovelace".to_owned(),
        holder_email: "ada@example.com".to_owned(),
        order_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001),
        ticket_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0042),
        price_minor: 12_950,
        currency: "EUR".to_owned(),
        code: signed_code(),
    }
}

/// The page's text, with line breaks and spacing removed so that wrapped values compare.
fn page_text(pdf: &[u8]) -> String {
    let doc = Document::load_mem(pdf).expect("the PDF parses");
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    let text = doc.extract_text(&pages).expect("text extracts");
    text.split_whitespace().collect()
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect()
}

/// Rebuilds the QR module grid from the rectangles inside the page's `/QrCode` section.
fn qr_grid_from_pdf(pdf: &[u8]) -> Vec<Vec<bool>> {
    let doc = Document::load_mem(pdf).expect("the PDF parses");
    let (_, page_id) = doc.get_pages().into_iter().next().expect("one page");
    let content = Content::decode(&doc.get_page_content(page_id)).expect("content decodes");
    let mut inside = false;
    let mut runs = Vec::new();
    for op in &content.operations {
        match op.operator.as_str() {
            "BMC" => {
                inside = op.operands.first().and_then(|o| o.as_name().ok()) == Some(b"QrCode");
            }
            "EMC" => inside = false,
            "re" if inside => {
                let n: Vec<f32> = op
                    .operands
                    .iter()
                    .map(|o| o.as_float().expect("numeric operand"))
                    .collect();
                runs.push((n[0] as usize, n[1] as usize, n[2] as usize));
                // Modules are whole units of the section's coordinate system.
                assert_eq!(n[3], 1.0);
                assert!(n.iter().all(|v| v.fract() == 0.0), "{n:?}");
            }
            _ => {}
        }
    }
    assert!(!runs.is_empty(), "no QR rectangles found");
    let width = runs.iter().map(|&(x, _, w)| x + w).max().unwrap_or(0);
    let height = runs.iter().map(|&(_, y, _)| y + 1).max().unwrap_or(0);
    assert_eq!(width, height, "a QR code is square");
    let mut grid = vec![vec![false; width]; width];
    for (x, y, w) in runs {
        for cell in &mut grid[y][x..x + w] {
            *cell = true;
        }
    }
    grid
}

/// Draws a module grid as a greyscale picture (4 pixels a module, 4 modules of quiet
/// zone) and lets `rqrr` find and decode it, as a scanner would.
fn scan(grid: &[Vec<bool>]) -> Vec<String> {
    const SCALE: usize = 4;
    const QUIET: usize = 4;
    let side = (grid.len() + 2 * QUIET) * SCALE;
    scan_pixels(side, side, |x, y| {
        let (mx, my) = (x / SCALE, y / SCALE);
        let dark = mx >= QUIET
            && my >= QUIET
            && grid
                .get(my - QUIET)
                .and_then(|row| row.get(mx - QUIET))
                .copied()
                .unwrap_or(false);
        if dark { 0 } else { 255 }
    })
}

/// Finds and decodes every QR code in a greyscale picture (0 black, 255 white).
fn scan_pixels(width: usize, height: usize, pixel: impl Fn(usize, usize) -> u8) -> Vec<String> {
    rqrr::PreparedImage::prepare_from_greyscale(width, height, pixel)
        .detect_grids()
        .into_iter()
        .map(|grid| grid.decode().expect("the QR code decodes").1)
        .collect()
}

#[test]
fn renders_one_page_that_shows_every_detail() {
    let ticket = ticket();
    let pdf = render(&ticket).expect("renders");
    assert!(pdf.starts_with(b"%PDF-"));
    let doc = Document::load_mem(&pdf).expect("the PDF parses");
    assert_eq!(doc.get_pages().len(), 1);

    let text = page_text(&pdf);
    for expected in [
        "Rust Nation Live: The Borrow Checker Tour",
        "Le Zénith, 211 avenue Jean Jaurès, 75019 Paris",
        "Saturday 14 March 2026",
        "20:00 UTC+01:00 (Europe/Paris)",
        "VIP",
        "A-12",
        "Ada Lovelace",
        "ada@example.com",
        "EUR 129.50",
        "01930000-0000-7000-8000-000000000001",
        "01930000-0000-7000-8000-000000000042",
        &ticket.code,
    ] {
        assert!(
            text.contains(&squeeze(expected)),
            "{expected:?} missing from {text:?}"
        );
    }
}

#[test]
fn the_qr_code_drawn_in_the_pdf_scans_to_exactly_the_code() {
    let ticket = ticket();
    let pdf = render(&ticket).expect("renders");
    let grid = qr_grid_from_pdf(&pdf);
    let matrix = QrMatrix::encode(&ticket.code).expect("encodes");
    assert_eq!(grid.len(), matrix.width());
    assert_eq!(scan(&grid), vec![ticket.code.clone()]);

    // And the code the door reads verifies.
    let signer = TicketCodeSigner::new(b"a test key that is long enough for hmac");
    let claims = signer
        .verify(&scan(&grid)[0])
        .expect("the scanned code verifies");
    assert_eq!(claims.ticket_id, ticket.ticket_id);
}

#[test]
fn the_rasterised_page_scans_to_exactly_the_code() {
    let available = std::process::Command::new("pdftoppm")
        .arg("-v")
        .output()
        .is_ok();
    if !available {
        println!("SKIPPED: pdftoppm (poppler-utils) is not installed; raster scan not tested");
        return;
    }
    let ticket = ticket();
    let pdf = render(&ticket).expect("renders");
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("ticket.pdf");
    std::fs::write(&input, &pdf).expect("write PDF");
    let output = dir.path().join("page");
    let status = std::process::Command::new("pdftoppm")
        .args(["-r", "150", "-gray", "-singlefile"])
        .arg(&input)
        .arg(&output)
        .status()
        .expect("pdftoppm runs");
    assert!(status.success(), "pdftoppm failed: {status}");
    let pgm = std::fs::read(dir.path().join("page.pgm")).expect("pdftoppm wrote a PGM");
    let (width, height, pixels) = parse_pgm(&pgm);
    let found = scan_pixels(width, height, |x, y| pixels[y * width + x]);
    assert_eq!(found, vec![ticket.code]);
}

/// Reads a binary 8-bit PGM (`P5`), the format `pdftoppm -gray` writes.
fn parse_pgm(bytes: &[u8]) -> (usize, usize, &[u8]) {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(std::str::from_utf8(&bytes[start..at]).expect("ASCII header"));
    }
    assert_eq!(fields[0], "P5");
    assert_eq!(fields[3], "255");
    let width: usize = fields[1].parse().expect("width");
    let height: usize = fields[2].parse().expect("height");
    let pixels = &bytes[at + 1..];
    assert_eq!(pixels.len(), width * height);
    (width, height, pixels)
}

#[test]
fn rendering_is_deterministic() {
    let ticket = ticket();
    assert_eq!(render(&ticket), render(&ticket));
}

#[test]
fn other_scripts_are_transliterated_and_missing_optional_parts_have_defaults() {
    let ticket = TicketDocument {
        event_name: "Концерт в Москве 東京".to_owned(),
        holder_name: "Łukasz Żółć".to_owned(),
        seat: None,
        time_zone: None,
        starts_at: starts_at().with_timezone(&FixedOffset::east_opt(0).expect("UTC")),
        currency: "jpy".to_owned(),
        price_minor: 12_000,
        ..ticket()
    };
    let text = page_text(&render(&ticket).expect("renders"));
    for expected in [
        "Kontsert v Moskve",
        "Lukasz Zólc",
        "General admission",
        "19:00 UTC",
        "JPY 12,000",
    ] {
        assert!(
            text.contains(&squeeze(expected)),
            "{expected:?} missing from {text:?}"
        );
    }
}

#[test]
fn very_long_values_are_wrapped_and_truncated_on_one_page() {
    let long = "Extraordinarily ".repeat(31);
    let ticket = TicketDocument {
        event_name: long.clone(),
        venue: long.clone(),
        tier: long.clone(),
        holder_name: long.clone(),
        holder_email: format!("{}@example.com", "x".repeat(400)),
        seat: Some(long.clone()),
        ..ticket()
    };
    let pdf = render(&ticket).expect("renders");
    let doc = Document::load_mem(&pdf).expect("the PDF parses");
    assert_eq!(doc.get_pages().len(), 1);
    let text = page_text(&pdf);
    assert!(text.contains('…'), "truncated text ends with an ellipsis");
    // The QR code is unaffected by the text around it.
    assert_eq!(scan(&qr_grid_from_pdf(&pdf)), vec![ticket.code]);
}

#[test]
fn bad_input_is_refused_with_a_stable_code() {
    let cases: Vec<(TicketDocument, &str)> = vec![
        (
            TicketDocument {
                event_name: "  ".to_owned(),
                ..ticket()
            },
            "TICKET_FIELD_MISSING",
        ),
        (
            TicketDocument {
                venue: String::new(),
                ..ticket()
            },
            "TICKET_FIELD_MISSING",
        ),
        (
            TicketDocument {
                tier: "\n".to_owned(),
                ..ticket()
            },
            "TICKET_FIELD_MISSING",
        ),
        (
            TicketDocument {
                holder_email: String::new(),
                ..ticket()
            },
            "TICKET_FIELD_MISSING",
        ),
        (
            TicketDocument {
                seat: Some(" ".to_owned()),
                ..ticket()
            },
            "TICKET_FIELD_MISSING",
        ),
        (
            TicketDocument {
                time_zone: Some(String::new()),
                ..ticket()
            },
            "TICKET_FIELD_MISSING",
        ),
        (
            TicketDocument {
                holder_name: "é".repeat(MAX_TEXT_LEN + 1),
                ..ticket()
            },
            "TICKET_FIELD_TOO_LONG",
        ),
        (
            TicketDocument {
                currency: "EURO".to_owned(),
                ..ticket()
            },
            "TICKET_INVALID_CURRENCY",
        ),
        (
            TicketDocument {
                currency: "€€€".to_owned(),
                ..ticket()
            },
            "TICKET_INVALID_CURRENCY",
        ),
        (
            TicketDocument {
                code: String::new(),
                ..ticket()
            },
            "TICKET_INVALID_CODE",
        ),
        (
            TicketDocument {
                code: "A".repeat(MAX_CODE_LEN + 1),
                ..ticket()
            },
            "TICKET_INVALID_CODE",
        ),
        (
            TicketDocument {
                code: "abc def".to_owned(),
                ..ticket()
            },
            "TICKET_INVALID_CODE",
        ),
        (
            TicketDocument {
                code: "código".to_owned(),
                ..ticket()
            },
            "TICKET_INVALID_CODE",
        ),
    ];
    for (ticket, code) in cases {
        let error = render(&ticket).expect_err("refused");
        assert_eq!(error.code(), code, "{error}");
    }
    assert_eq!(
        render(&TicketDocument {
            holder_name: "x".repeat(MAX_TEXT_LEN + 1),
            ..ticket()
        }),
        Err(RenderError::FieldTooLong {
            field: "holder_name",
            len: MAX_TEXT_LEN + 1,
            max: MAX_TEXT_LEN,
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any code within the limits survives the trip through the PDF's QR code unchanged.
    #[test]
    fn any_valid_code_scans_back_unchanged(code in "[!-~]{1,256}") {
        let pdf = render(&TicketDocument { code: code.clone(), ..ticket() })
            .expect("renders");
        prop_assert_eq!(scan(&qr_grid_from_pdf(&pdf)), vec![code]);
    }

    /// Whatever text arrives, rendering answers (a PDF or an error) and never panics, and
    /// an answer of a PDF is one readable page.
    #[test]
    fn arbitrary_text_never_panics(
        event_name in any::<String>(),
        venue in any::<String>(),
        tier in any::<String>(),
        seat in proptest::option::of(any::<String>()),
        holder_name in any::<String>(),
        holder_email in any::<String>(),
        time_zone in proptest::option::of(any::<String>()),
        currency in any::<String>(),
        code in any::<String>(),
        price_minor in any::<u64>(),
    ) {
        let ticket = TicketDocument {
            event_name, venue, tier, seat, holder_name, holder_email, time_zone, currency,
            code, price_minor, ..ticket()
        };
        if let Ok(pdf) = render(&ticket) {
            let doc = Document::load_mem(&pdf).expect("the PDF parses");
            prop_assert_eq!(doc.get_pages().len(), 1);
        }
    }

    /// The same, with inputs that pass validation, so the layout code is what is tested.
    #[test]
    fn arbitrary_valid_text_always_renders(
        event_name in "\\PC{1,120}",
        venue in "\\PC{1,200}",
        holder_name in "\\PC{0,80}",
        holder_email in "[a-z]\\PC{0,80}",
        price_minor in any::<u64>(),
        offset_minutes in -14i32 * 60..=14 * 60,
    ) {
        let starts_at = starts_at()
            .with_timezone(&FixedOffset::east_opt(offset_minutes * 60).expect("in range"));
        let ticket = TicketDocument {
            event_name: format!("x{event_name}"),
            venue: format!("x{venue}"),
            holder_name,
            holder_email,
            price_minor,
            starts_at,
            ..ticket()
        };
        let pdf = render(&ticket).expect("valid input renders");
        prop_assert_eq!(scan(&qr_grid_from_pdf(&pdf)), vec![ticket.code]);
    }
}
