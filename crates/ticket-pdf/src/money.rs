//! Prices as people read them: `EUR 1,234.50` from 123450 minor units.

/// Currencies whose minor unit is the major unit (ISO 4217 exponent 0).
const NO_DECIMALS: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];

/// Currencies with a thousandth minor unit (ISO 4217 exponent 3).
const THREE_DECIMALS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

/// How many decimal digits a currency's minor unit has; 2 unless ISO 4217 says otherwise.
fn exponent(currency: &str) -> u32 {
    if NO_DECIMALS.contains(&currency) {
        0
    } else if THREE_DECIMALS.contains(&currency) {
        3
    } else {
        2
    }
}

/// Formats an amount of minor units of `currency` (an upper-case ISO 4217 code).
pub(crate) fn format(amount_minor: u64, currency: &str) -> String {
    let exponent = exponent(currency);
    let divisor = 10u64.pow(exponent);
    let major = group_thousands(amount_minor / divisor);
    if exponent == 0 {
        format!("{currency} {major}")
    } else {
        let minor = amount_minor % divisor;
        format!(
            "{currency} {major}.{minor:0width$}",
            width = exponent as usize
        )
    }
}

/// `1234567` as `1,234,567`.
fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_the_currency_exponent() {
        assert_eq!(format(4500, "EUR"), "EUR 45.00");
        assert_eq!(format(123_456_789, "USD"), "USD 1,234,567.89");
        assert_eq!(format(5, "GBP"), "GBP 0.05");
        assert_eq!(format(0, "EUR"), "EUR 0.00");
        assert_eq!(format(12_000, "JPY"), "JPY 12,000");
        assert_eq!(format(1_500, "KWD"), "KWD 1.500");
        assert_eq!(format(u64::MAX, "EUR"), "EUR 184,467,440,737,095,516.15");
    }
}
