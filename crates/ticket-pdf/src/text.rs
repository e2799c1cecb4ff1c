//! Text for the standard PDF fonts: encoding to WinAnsi, measuring and wrapping.
//!
//! The page uses the built-in Helvetica and Courier fonts, which every PDF reader has, so
//! no font is embedded. Those fonts only cover the WinAnsi character set (Latin-1 plus a
//! few typographic signs). Characters outside it are transliterated to ASCII with
//! `deunicode`, one character at a time: "Łódź" prints as "Lódz" (`ó` is in WinAnsi),
//! "Москва" as "Moskva", "東京" as "Dong Jing". A character with no transliteration
//! becomes `?`. Control characters become spaces. Nothing here panics on any input.

/// An encoded byte string in the WinAnsi encoding, ready for a `Tj` operator.
pub(crate) type WinAnsi = Vec<u8>;

/// The WinAnsi byte of the horizontal ellipsis, which marks truncated text.
pub(crate) const ELLIPSIS: u8 = 0x85;

/// Encodes `text` for a standard font, transliterating what WinAnsi cannot show.
pub(crate) fn encode(text: &str) -> WinAnsi {
    let mut out = Vec::with_capacity(text.len());
    for ch in text.chars() {
        if let Some(byte) = win_ansi_byte(ch) {
            out.push(byte);
        } else if ch.is_control() || ch.is_whitespace() {
            out.push(b' ');
        } else {
            match deunicode::deunicode_char(ch) {
                Some(ascii) if !ascii.is_empty() => {
                    // deunicode's output is ASCII, but keep only printable bytes so a
                    // surprising table entry cannot smuggle a control byte in.
                    out.extend(
                        ascii
                            .bytes()
                            .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' }),
                    );
                }
                _ => out.push(b'?'),
            }
        }
    }
    collapse_spaces(out)
}

/// Trims and collapses runs of spaces, so that wrapping sees single separators.
fn collapse_spaces(bytes: Vec<u8>) -> WinAnsi {
    let mut out = Vec::with_capacity(bytes.len());
    for b in bytes {
        if b == b' ' && (out.is_empty() || out.last() == Some(&b' ')) {
            continue;
        }
        out.push(b);
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    out
}

/// The WinAnsi byte of `ch`, if the encoding has it.
fn win_ansi_byte(ch: char) -> Option<u8> {
    let code = u32::from(ch);
    match code {
        0x20..=0x7e | 0xa0..=0xff => u8::try_from(code).ok(),
        _ => Some(match ch {
            '€' => 0x80,
            '‚' => 0x82,
            'ƒ' => 0x83,
            '„' => 0x84,
            '…' => 0x85,
            '†' => 0x86,
            '‡' => 0x87,
            'ˆ' => 0x88,
            '‰' => 0x89,
            'Š' => 0x8a,
            '‹' => 0x8b,
            'Œ' => 0x8c,
            'Ž' => 0x8e,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '˜' => 0x98,
            '™' => 0x99,
            'š' => 0x9a,
            '›' => 0x9b,
            'œ' => 0x9c,
            'ž' => 0x9e,
            'Ÿ' => 0x9f,
            _ => return None,
        }),
    }
}

/// One of the standard fonts the page uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Font {
    Regular,
    Bold,
    Mono,
}

/// Advance widths (1/1000 em) of ASCII 32..=126 in Helvetica, from its AFM file.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, // 32-47
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, // 48-63
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, // 64-79
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, // 80-95
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, // 96-111
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, // 112-126
];

/// Advance widths (1/1000 em) of ASCII 32..=126 in Helvetica-Bold, from its AFM file.
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, // 32-47
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, // 48-63
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778, // 64-79
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, // 80-95
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, // 96-111
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584, // 112-126
];

/// Width assumed for a byte outside ASCII: no WinAnsi glyph of Helvetica is wider than
/// 1000/1000 em, so text measured with it never overflows (it may wrap a little early).
const WIDEST_GLYPH: u16 = 1000;

/// Width of `byte` in 1/1000 em.
fn glyph_width(font: Font, byte: u8) -> u16 {
    let table = match font {
        // Every Courier glyph is 600/1000 em wide.
        Font::Mono => return 600,
        Font::Regular => &HELVETICA,
        Font::Bold => &HELVETICA_BOLD,
    };
    match byte {
        0x20..=0x7e => table[usize::from(byte - 0x20)],
        _ => WIDEST_GLYPH,
    }
}

/// Width of `text` in points at `size`.
pub(crate) fn width(font: Font, size: f32, text: &[u8]) -> f32 {
    let units: u32 = text.iter().map(|&b| u32::from(glyph_width(font, b))).sum();
    units as f32 * size / 1000.0
}

/// Breaks `text` into at most `max_lines` lines no wider than `max_width` points.
///
/// Lines break between words; a word wider than a line is split between characters.
/// When the text needs more lines than allowed, the last line ends with an ellipsis.
pub(crate) fn wrap(
    text: &[u8],
    font: Font,
    size: f32,
    max_width: f32,
    max_lines: usize,
) -> Vec<WinAnsi> {
    let fits = |line: &[u8]| width(font, size, line) <= max_width;
    let mut lines: Vec<WinAnsi> = Vec::new();
    let mut current: WinAnsi = Vec::new();
    for word in text.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        let mut candidate = current.clone();
        if !candidate.is_empty() {
            candidate.push(b' ');
        }
        candidate.extend_from_slice(word);
        if fits(&candidate) {
            current = candidate;
            continue;
        }
        if !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        // The word starts a line; split it if even a line of its own is too narrow.
        for &byte in word {
            current.push(byte);
            if !fits(&current) && current.len() > 1 {
                current.pop();
                lines.push(std::mem::replace(&mut current, vec![byte]));
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(last) = lines.last_mut() {
            last.push(ELLIPSIS);
            while last.len() > 1 && !fits(last) {
                last.pop();
                last.pop();
                last.push(ELLIPSIS);
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn latin1_and_typographic_signs_are_kept() {
        assert_eq!(encode("Café – 10 €"), b"Caf\xe9 \x96 10 \x80".to_vec());
    }

    #[test]
    fn other_scripts_are_transliterated() {
        assert_eq!(encode("Москва"), b"Moskva".to_vec());
        assert!(!encode("東京").contains(&b'?'));
        assert_eq!(encode("Łukasz"), b"Lukasz".to_vec());
    }

    #[test]
    fn control_characters_become_single_spaces() {
        assert_eq!(encode("  a\n\tb\u{0}c  "), b"a b c".to_vec());
    }

    #[test]
    fn long_words_are_split_and_overflow_is_marked() {
        let text = vec![b'W'; 200];
        let lines = wrap(&text, Font::Bold, 20.0, 100.0, 2);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].last(), Some(&ELLIPSIS));
        for line in &lines {
            assert!(width(Font::Bold, 20.0, line) <= 100.0);
        }
    }

    proptest! {
        #[test]
        fn encoding_never_yields_control_bytes(text in any::<String>()) {
            let encoded = encode(&text);
            prop_assert!(encoded.iter().all(|&b| b >= 0x20 && b != 0x7f));
        }

        #[test]
        fn wrapped_lines_fit_and_keep_every_word_when_room_allows(
            words in proptest::collection::vec("[a-zA-Z0-9@.]{1,30}", 0..40),
            max_width in 30.0f32..400.0,
        ) {
            let text = words.join(" ");
            let lines = wrap(text.as_bytes(), Font::Regular, 11.0, max_width, usize::MAX);
            for line in &lines {
                prop_assert!(width(Font::Regular, 11.0, line) <= max_width);
            }
            // Nothing is lost or reordered: only spaces differ.
            let joined: Vec<u8> = lines.concat().into_iter().filter(|&b| b != b' ').collect();
            let original: Vec<u8> = text.bytes().filter(|&b| b != b' ').collect();
            prop_assert_eq!(joined, original);
        }

        #[test]
        fn truncation_respects_the_line_limit(
            text in "[ -~]{0,400}",
            max_lines in 1usize..4,
        ) {
            let lines = wrap(text.as_bytes(), Font::Regular, 11.0, 120.0, max_lines);
            prop_assert!(lines.len() <= max_lines);
            for line in &lines {
                prop_assert!(width(Font::Regular, 11.0, line) <= 120.0);
            }
        }
    }
}
