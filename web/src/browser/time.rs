//! Timestamps as people read them, formatted by the browser's own `Date`
//! so no date/time crate (and no time-zone database) ends up in the bundle.

use wasm_bindgen::JsValue;

/// Milliseconds since the Unix epoch, from the browser clock.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// The ways a message's time is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Local `HH:MM`, shown next to the message.
    pub short: String,
    /// Full local date and time, for the hover tooltip.
    pub full: String,
    /// ISO 8601 (UTC), for the `datetime` attribute.
    pub iso: String,
}

pub fn stamp(ms: i64) -> Stamp {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    let options = js_sys::Object::new();
    // Failing to set an option only makes the tooltip less detailed.
    let _ = js_sys::Reflect::set(&options, &"dateStyle".into(), &"full".into());
    let _ = js_sys::Reflect::set(&options, &"timeStyle".into(), &"medium".into());
    Stamp {
        short: hh_mm(date.get_hours(), date.get_minutes()),
        full: date.to_locale_string("default", &options).into(),
        // `toISOString` throws on an invalid date (a timestamp out of range).
        iso: if date.get_time().is_nan() {
            String::new()
        } else {
            date.to_iso_string().into()
        },
    }
}

/// The local calendar day of `ms`, as a number that orders days
/// (yyyymmdd), for telling where a new day starts.
pub fn day_key(ms: i64) -> u32 {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    date.get_full_year() * 10_000 + (date.get_month() + 1) * 100 + date.get_date()
}

/// How a day separator names the day of `ms`: "Today", "Yesterday", or the
/// date in the reader's language (with the year only when it is not this
/// one).
pub fn day_label(ms: i64) -> String {
    let now = now_ms();
    let day = day_key(ms);
    if day == day_key(now) {
        return "Today".to_owned();
    }
    if day == day_key(now - 86_400_000) {
        return "Yesterday".to_owned();
    }
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    let options = js_sys::Object::new();
    let set = |key: &str, value: &str| {
        let _ = js_sys::Reflect::set(&options, &key.into(), &value.into());
    };
    set("weekday", "long");
    set("day", "numeric");
    set("month", "long");
    if day / 10_000 != day_key(now) / 10_000 {
        set("year", "numeric");
    }
    date.to_locale_date_string("default", &options).into()
}

fn hh_mm(hours: u32, minutes: u32) -> String {
    format!("{hours:02}:{minutes:02}")
}

#[cfg(test)]
mod tests {
    use super::hh_mm;

    #[test]
    fn pads_to_two_digits() {
        assert_eq!(hh_mm(9, 5), "09:05");
        assert_eq!(hh_mm(23, 59), "23:59");
    }
}
