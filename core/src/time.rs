//! Dates in Europe/Rome: due dates and "today" are Italian calendar days, whatever the host's zone.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Europe::Rome;

/// The calendar day in Rome at the given instant.
pub fn rome_date(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&Rome).date_naive()
}

/// Today's date in Rome.
pub fn today_rome() -> NaiveDate {
    rome_date(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn late_evening_utc_is_already_tomorrow_in_rome() {
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 30, 0).unwrap();
        assert_eq!(rome_date(at), NaiveDate::from_ymd_opt(2027, 1, 1).unwrap());
    }
}
