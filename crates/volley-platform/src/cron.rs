//! Five-field cron schedules (minute hour day-of-month month day-of-week, UTC) for leaderboard
//! seasons: `*`, numbers, lists (`1,15`), ranges (`1-5`) and steps (`*/15`, `0-30/10`). As in
//! classic cron, when both day fields are restricted a day matches if either does. Day of week
//! is 0-6 from Sunday (7 is also Sunday).

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    dom: u32,
    months: u16,
    dow: u8,
    dom_star: bool,
    dow_star: bool,
    text: String,
}

fn field(s: &str, min: u32, max: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let star = s == "*";
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (
                r,
                st.parse::<u32>()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a: u32 = a.parse().map_err(|_| format!("bad number in {part:?}"))?;
            let b: u32 = b.parse().map_err(|_| format!("bad number in {part:?}"))?;
            (a, b)
        } else {
            let v: u32 = range
                .parse()
                .map_err(|_| format!("bad number in {part:?}"))?;
            if step > 1 {
                (v, max)
            } else {
                (v, v)
            }
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1u64 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

/// Days in `month` (1-12) of `year`.
fn days_in(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
#[cfg(test)]
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl Cron {
    /// Parses five whitespace-separated fields.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "a cron schedule has 5 fields, {text:?} has {}",
                f.len()
            ));
        }
        let (minutes, _) = field(f[0], 0, 59)?;
        let (hours, _) = field(f[1], 0, 23)?;
        let (dom, dom_star) = field(f[2], 1, 31)?;
        let (months, _) = field(f[3], 1, 12)?;
        let (mut dow, dow_star) = field(f[4], 0, 7)?;
        if dow & (1 << 7) != 0 {
            dow |= 1;
        }
        Ok(Cron {
            minutes,
            hours: hours as u32,
            dom: dom as u32,
            months: months as u16,
            dow: (dow & 0x7f) as u8,
            dom_star,
            dow_star,
            text: text.to_owned(),
        })
    }

    /// The schedule as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, m: u32, d: u32, days: i64) -> bool {
        let wd = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
        let dom_ok = self.dom & (1 << d) != 0;
        let dow_ok = self.dow & (1 << wd) != 0;
        let month_ok = self.months & (1 << m) != 0;
        month_ok
            && match (self.dom_star, self.dow_star) {
                (true, true) => true,
                (false, true) => dom_ok,
                (true, false) => dow_ok,
                (false, false) => dom_ok || dow_ok,
            }
    }

    /// The first matching minute strictly after `after_ms` (Unix ms, UTC), within ~5 years.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start_min = after_ms.div_euclid(60_000) + 1;
        let first = start_min.div_euclid(1440);
        let mut minute_of_day = start_min.rem_euclid(1440);
        for days in first..first + 366 * 5 {
            let (y, m, d) = civil_from_days(days);
            if d <= days_in(y, m) && self.day_matches(m, d, days) {
                for mod_ in minute_of_day..1440 {
                    let (h, mi) = ((mod_ / 60) as u32, (mod_ % 60) as u32);
                    if self.hours & (1 << h) != 0 && self.minutes & (1u64 << mi) != 0 {
                        return Some((days * 1440 + mod_) * 60_000);
                    }
                }
            }
            minute_of_day = 0;
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ms(y: i64, m: u32, d: u32, h: i64, mi: i64) -> i64 {
        (days_from_civil(y, m, d) * 1440 + h * 60 + mi) * 60_000
    }

    #[test]
    fn civil_round_trip() {
        for z in [-1000, 0, 59, 11_016, 19_000, 20_819, 40_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn next_occurrences() {
        let weekly = Cron::parse("0 0 * * 1").unwrap(); // Mondays at midnight
                                                        // 2026-11-27 is a Friday.
        let from = ms(2026, 11, 27, 12, 0);
        assert_eq!(weekly.next_after(from), Some(ms(2026, 11, 30, 0, 0)));
        let monthly = Cron::parse("30 6 1 * *").unwrap();
        assert_eq!(monthly.next_after(from), Some(ms(2026, 12, 1, 6, 30)));
        assert_eq!(
            monthly.next_after(ms(2026, 12, 1, 6, 30)),
            Some(ms(2027, 1, 1, 6, 30)),
            "strictly after"
        );
        let every15 = Cron::parse("*/15 * * * *").unwrap();
        assert_eq!(
            every15.next_after(ms(2026, 1, 1, 10, 7)),
            Some(ms(2026, 1, 1, 10, 15))
        );
        let leap = Cron::parse("0 0 29 2 *").unwrap();
        assert_eq!(leap.next_after(from), Some(ms(2028, 2, 29, 0, 0)));
        let either = Cron::parse("0 12 13 * 5").unwrap(); // the 13th or any Friday
        assert_eq!(
            either.next_after(ms(2026, 11, 27, 13, 0)),
            Some(ms(2026, 12, 4, 12, 0))
        );
        let sunday7 = Cron::parse("0 0 * * 7").unwrap();
        assert_eq!(sunday7.next_after(from), Some(ms(2026, 11, 29, 0, 0)));
        assert_eq!(
            Cron::parse("0 0 31 2 *").unwrap().next_after(from),
            None,
            "never"
        );
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?}");
        }
    }
}
