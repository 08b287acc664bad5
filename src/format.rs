//! Numbers as people read them.

/// `1234567.5` → `1,234,567.5`.
pub fn grouped(number: f64) -> String {
    let negative = number < 0.0;
    let magnitude = number.abs();
    let text = if magnitude.fract() == 0.0 && magnitude < 1e15 {
        format!("{magnitude:.0}")
    } else {
        format!("{magnitude:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut out = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    if negative { format!("-{out}") } else { out }
}
