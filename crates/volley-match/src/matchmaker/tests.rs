//! Matchmaker tests: unit tests of each rule, then property tests that run random operation
//! sequences and check every match against an independent reference of the rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn duo() -> PoolConfig {
    PoolConfig {
        min_players: 2,
        max_players: 2,
        fill_wait_ms: 0,
        skill_window: Widening::new(100.0, 50.0, 800.0),
        latency_limit: Widening::new(100.0, 10.0, 200.0),
    }
}

fn squad() -> PoolConfig {
    PoolConfig {
        min_players: 2,
        max_players: 4,
        fill_wait_ms: 5_000,
        skill_window: Widening::fixed(1_000.0),
        latency_limit: Widening::fixed(1_000.0),
    }
}

fn matchmaker() -> Matchmaker {
    Matchmaker::new(
        MatchmakerConfig::default()
            .with_pool("duo", duo())
            .with_pool("squad", squad()),
    )
    .unwrap()
}

fn solo(pool: &str, user: &str, skill: f64) -> Ticket {
    Ticket::solo(pool, user, skill)
}

fn party(pool: &str, users: &[&str], skill: f64) -> Ticket {
    Ticket::new(pool, users.iter().map(|u| Member::new(*u, skill)).collect())
}

fn users_of(m: &Match) -> BTreeSet<String> {
    m.user_ids().map(str::to_owned).collect()
}

/// Ticks and checks the internal invariants.
fn tick(mm: &mut Matchmaker, now_ms: u64) -> TickOutput {
    let out = mm.tick(now_ms);
    mm.check_invariants();
    out
}

// ---------------------------------------------------------------------------------------------
// Unit tests

#[test]
fn two_close_players_match_at_once() {
    let mut mm = matchmaker();
    let a = mm
        .add(solo("duo", "a", 1500.0).with_latency("eu", 30), 0)
        .unwrap();
    let b = mm
        .add(solo("duo", "b", 1550.0).with_latency("eu", 50), 0)
        .unwrap();
    mm.check_invariants();
    assert_eq!(mm.len(), 2);
    let out = tick(&mut mm, 0);
    assert_eq!(out.matches.len(), 1);
    let m = &out.matches[0];
    assert_eq!(m.pool, "duo");
    assert_eq!(m.tickets.iter().map(|t| t.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(m.region.as_deref(), Some("eu"));
    assert_eq!(
        m.quality,
        MatchQuality {
            skill_spread: 50.0,
            max_latency_ms: Some(50),
            max_wait_ms: 0,
            players: 2,
        }
    );
    assert!(mm.is_empty());
    assert_eq!(mm.get(a), None);
    assert_eq!(mm.ticket_of("a"), None);
}

#[test]
fn widening_eventually_matches_far_apart_players() {
    let mut mm = matchmaker();
    mm.add(solo("duo", "low", 1000.0), 0).unwrap();
    mm.add(solo("duo", "high", 1600.0), 0).unwrap();
    // The window is 100 + 50/s: it reaches the 600 spread after 10 s, not before.
    for now in (0..10_000).step_by(500) {
        assert!(tick(&mut mm, now).matches.is_empty(), "matched at {now}");
    }
    let out = tick(&mut mm, 10_000);
    assert_eq!(out.matches.len(), 1);
    assert_eq!(out.matches[0].quality.skill_spread, 600.0);
    assert_eq!(out.matches[0].quality.max_wait_ms, 10_000);
}

#[test]
fn spread_must_fit_every_tickets_own_window() {
    let mut mm = matchmaker();
    // An old ticket with a wide window and a new one with a narrow window do not match until
    // the new one has widened too.
    mm.add(solo("duo", "old", 1000.0), 0).unwrap();
    assert!(tick(&mut mm, 20_000).matches.is_empty());
    mm.add(solo("duo", "new", 1400.0), 20_000).unwrap();
    assert!(tick(&mut mm, 20_000).matches.is_empty());
    assert!(tick(&mut mm, 25_000).matches.is_empty());
    // New ticket's window: 100 + 50 · 6 = 400.
    assert_eq!(tick(&mut mm, 26_000).matches.len(), 1);
}

#[test]
fn windows_are_capped() {
    let w = Widening::new(100.0, 50.0, 800.0);
    assert_eq!(w.at(0), 100.0);
    assert_eq!(w.at(2_000), 200.0);
    assert_eq!(w.at(u64::MAX), 800.0);
    assert_eq!(w.time_to_max_ms(), Some(14_000));
    assert_eq!(Widening::fixed(5.0).time_to_max_ms(), Some(0));
    assert_eq!(Widening::new(1.0, 0.0, 5.0).time_to_max_ms(), None);
    let mut mm = matchmaker();
    mm.add(solo("duo", "a", 0.0), 0).unwrap();
    mm.add(solo("duo", "b", 900.0), 0).unwrap();
    // 900 is beyond the 800 maximum: never.
    for now in [0, 10_000, 1_000_000, u64::MAX - 1] {
        assert!(tick(&mut mm, now).matches.is_empty());
    }
}

#[test]
fn unsatisfiable_constraint_never_matches_and_expires() {
    let mut mm = matchmaker();
    let lonely = mm
        .add(
            solo("duo", "lonely", 1500.0)
                .must(Clause::eq("map", "atlantis"))
                .expires_at(30_000),
            0,
        )
        .unwrap();
    let picky = mm
        .add(
            solo("duo", "picky", 1500.0)
                .must(Clause::range("level", Some(90.0), None))
                .expires_at(30_000),
            0,
        )
        .unwrap();
    let mut expired = Vec::new();
    for i in 0..40u64 {
        let now = i * 1_000;
        // Fresh, compatible company every second, all of which matches among itself.
        for j in 0..4 {
            let t = solo("duo", &format!("u{i}-{j}"), 1500.0 + j as f64)
                .with_string("map", "harbor")
                .with_number("level", 10.0);
            mm.add(t, now).unwrap();
        }
        let out = tick(&mut mm, now);
        for m in &out.matches {
            assert!(
                m.tickets.iter().all(|t| t.id != lonely && t.id != picky),
                "unsatisfiable ticket matched: {m:?}"
            );
        }
        assert_eq!(out.matches.len(), 2, "the company still matches at {now}");
        expired.extend(out.expired);
        if now < 30_000 {
            // Both sit dormant, costing the searches nothing.
            assert_eq!(mm.pools["duo"].dormant_len(), 2, "at {now}");
        }
    }
    assert_eq!(expired, vec![lonely, picky]);
    assert!(mm.is_empty());
}

#[test]
fn dormant_ticket_wakes_when_a_partner_arrives() {
    let mut mm = matchmaker();
    let picky = mm
        .add(
            solo("duo", "picky", 1500.0).must(Clause::range("level", Some(50.0), Some(60.0))),
            0,
        )
        .unwrap();
    mm.add(solo("duo", "low", 1500.0).with_number("level", 10.0), 0)
        .unwrap();
    assert!(tick(&mut mm, 0).matches.is_empty());
    assert_eq!(mm.pools["duo"].dormant_len(), 1);
    mm.add(solo("duo", "mid", 1510.0).with_number("level", 55.0), 1_000)
        .unwrap();
    let out = tick(&mut mm, 1_000);
    assert_eq!(out.matches.len(), 1);
    assert_eq!(
        users_of(&out.matches[0]),
        BTreeSet::from(["mid".to_owned(), "picky".to_owned()])
    );
    assert!(out.matches[0].tickets.iter().any(|t| t.id == picky));
    assert_eq!(mm.len(), 1);
}

#[test]
fn dormant_tickets_that_need_each_other_still_match() {
    // Each satisfies the other's requirement: neither may go dormant for lack of the other.
    let mut mm = matchmaker();
    mm.add(
        solo("duo", "a", 1500.0)
            .with_string("side", "red")
            .must(Clause::eq("side", "blue")),
        0,
    )
    .unwrap();
    mm.add(
        solo("duo", "b", 1500.0)
            .with_string("side", "blue")
            .must(Clause::eq("side", "red")),
        0,
    )
    .unwrap();
    assert_eq!(tick(&mut mm, 0).matches.len(), 1);
}

#[test]
fn hard_constraints_hold_in_both_directions() {
    let mut mm = matchmaker();
    // "a" accepts "b", but "b" refuses players on map x.
    mm.add(
        solo("duo", "a", 1500.0)
            .with_string("map", "x")
            .must(Clause::eq("lang", "en")),
        0,
    )
    .unwrap();
    mm.add(
        solo("duo", "b", 1500.0)
            .with_string("lang", "en")
            .must_not(Clause::eq("map", "x")),
        0,
    )
    .unwrap();
    assert!(tick(&mut mm, 0).matches.is_empty());
    mm.add(solo("duo", "c", 1500.0).with_string("lang", "en"), 0)
        .unwrap();
    let out = tick(&mut mm, 0);
    assert_eq!(out.matches.len(), 1);
    let users = users_of(&out.matches[0]);
    assert!(users.contains("c"), "{users:?}");
    assert!(!(users.contains("a") && users.contains("b")));
}

#[test]
fn numeric_ranges_are_inclusive_and_open_ended() {
    let t = solo("duo", "x", 1.0).with_number("level", 10.0);
    for (min, max, holds) in [
        (Some(10.0), Some(10.0), true),
        (None, Some(10.0), true),
        (Some(10.0), None, true),
        (None, None, true),
        (Some(10.5), None, false),
        (None, Some(9.99), false),
    ] {
        assert_eq!(
            Clause::range("level", min, max).holds(&t.properties),
            holds,
            "{min:?}..{max:?}"
        );
    }
    assert!(!Clause::range("missing", None, None).holds(&t.properties));
    assert!(!Clause::eq("level", "10").holds(&t.properties));
}

#[test]
fn parties_stay_together_and_count_as_players() {
    let mut mm = matchmaker();
    mm.add(party("squad", &["a1", "a2", "a3"], 1500.0), 0)
        .unwrap();
    mm.add(party("squad", &["b1", "b2"], 1500.0), 0).unwrap();
    mm.add(solo("squad", "c", 1500.0), 0).unwrap();
    let out = tick(&mut mm, 0);
    // 3 + 1 fills the squad of 4; the pair waits.
    assert_eq!(out.matches.len(), 1);
    let users = users_of(&out.matches[0]);
    assert_eq!(users, ["a1", "a2", "a3", "c"].map(str::to_owned).into());
    assert_eq!(out.matches[0].quality.players, 4);
    assert_eq!(mm.ticket_of("b1"), mm.ticket_of("b2"));
    assert!(mm.ticket_of("b1").is_some());
}

#[test]
fn a_full_party_is_a_match_of_its_own() {
    let mut mm = matchmaker();
    mm.add(party("duo", &["a", "b"], 1500.0), 0).unwrap();
    let out = tick(&mut mm, 0);
    assert_eq!(out.matches.len(), 1);
    assert_eq!(out.matches[0].tickets.len(), 1);
    assert_eq!(out.matches[0].region, None);
    assert_eq!(out.matches[0].quality.max_latency_ms, None);
}

#[test]
fn partial_matches_wait_for_the_fill_wait() {
    let mut mm = matchmaker();
    mm.add(solo("squad", "a", 1500.0), 0).unwrap();
    mm.add(solo("squad", "b", 1500.0), 1_000).unwrap();
    mm.add(solo("squad", "c", 1500.0), 2_000).unwrap();
    for now in [0, 2_000, 4_999] {
        assert!(tick(&mut mm, now).matches.is_empty(), "at {now}");
    }
    // The oldest ticket has waited 5 s: three players are enough.
    let out = tick(&mut mm, 5_000);
    assert_eq!(out.matches.len(), 1);
    assert_eq!(out.matches[0].quality.players, 3);
    assert_eq!(out.matches[0].quality.max_wait_ms, 5_000);
}

#[test]
fn full_matches_form_without_waiting() {
    let mut mm = matchmaker();
    for u in ["a", "b", "c", "d", "e"] {
        mm.add(solo("squad", u, 1500.0), 0).unwrap();
    }
    let out = tick(&mut mm, 0);
    assert_eq!(out.matches.len(), 1);
    assert_eq!(out.matches[0].quality.players, 4);
    // The oldest four.
    assert_eq!(
        users_of(&out.matches[0]),
        ["a", "b", "c", "d"].map(str::to_owned).into()
    );
    assert_eq!(mm.len(), 1);
}

#[test]
fn region_minimises_the_worst_latency() {
    let mut mm = matchmaker();
    mm.add(
        solo("duo", "a", 1500.0)
            .with_latency("us", 40)
            .with_latency("eu", 70)
            .with_latency("asia", 95),
        0,
    )
    .unwrap();
    mm.add(
        solo("duo", "b", 1500.0)
            .with_latency("us", 90)
            .with_latency("eu", 60)
            .with_latency("asia", 20),
        0,
    )
    .unwrap();
    let out = tick(&mut mm, 0);
    // Worst latency: us 90, eu 70, asia 95.
    assert_eq!(out.matches[0].region.as_deref(), Some("eu"));
    assert_eq!(out.matches[0].quality.max_latency_ms, Some(70));

    // A tie goes to the first region by name.
    mm.add(
        solo("duo", "c", 1500.0)
            .with_latency("zz", 50)
            .with_latency("aa", 50),
        0,
    )
    .unwrap();
    mm.add(
        solo("duo", "d", 1500.0)
            .with_latency("zz", 10)
            .with_latency("aa", 10),
        0,
    )
    .unwrap();
    assert_eq!(tick(&mut mm, 0).matches[0].region.as_deref(), Some("aa"));
}

#[test]
fn latency_limits_widen_too() {
    let mut mm = matchmaker();
    // The only shared region is 150 ms away for "b"; its limit grows 100 + 10/s.
    mm.add(solo("duo", "a", 1500.0).with_latency("eu", 20), 0)
        .unwrap();
    mm.add(
        solo("duo", "b", 1500.0)
            .with_latency("eu", 150)
            .with_latency("us", 10),
        0,
    )
    .unwrap();
    assert!(tick(&mut mm, 0).matches.is_empty());
    assert!(tick(&mut mm, 4_999).matches.is_empty());
    let out = tick(&mut mm, 5_000);
    assert_eq!(out.matches[0].region.as_deref(), Some("eu"));
    assert_eq!(out.matches[0].quality.max_latency_ms, Some(150));

    // Beyond the 200 ms maximum: never.
    mm.add(solo("duo", "c", 1500.0).with_latency("eu", 20), 0)
        .unwrap();
    mm.add(solo("duo", "d", 1500.0).with_latency("eu", 250), 0)
        .unwrap();
    for now in [0, 100_000, 10_000_000] {
        assert!(tick(&mut mm, now).matches.is_empty());
    }
}

#[test]
fn tickets_without_latencies_go_anywhere() {
    let mut mm = matchmaker();
    mm.add(solo("duo", "a", 1500.0), 0).unwrap();
    mm.add(solo("duo", "b", 1500.0).with_latency("eu", 30), 0)
        .unwrap();
    let out = tick(&mut mm, 0);
    assert_eq!(out.matches[0].region.as_deref(), Some("eu"));
    assert_eq!(out.matches[0].quality.max_latency_ms, Some(30));

    mm.add(solo("duo", "c", 1500.0), 0).unwrap();
    mm.add(solo("duo", "d", 1500.0), 0).unwrap();
    let out = tick(&mut mm, 0);
    assert_eq!(out.matches[0].region, None);
    assert_eq!(out.matches[0].quality.max_latency_ms, None);
}

#[test]
fn pools_do_not_mix() {
    let mut mm = matchmaker();
    mm.add(solo("duo", "a", 1500.0), 0).unwrap();
    mm.add(solo("squad", "b", 1500.0), 0).unwrap();
    assert!(tick(&mut mm, 100_000).matches.is_empty());
    assert_eq!(mm.len(), 2);
}

#[test]
fn default_pool_serves_unknown_modes() {
    let mut mm = Matchmaker::new(MatchmakerConfig {
        default_pool: Some(duo()),
        ..MatchmakerConfig::default()
    })
    .unwrap();
    mm.add(solo("anything", "a", 1500.0), 0).unwrap();
    mm.add(solo("else", "b", 1500.0), 0).unwrap();
    mm.add(solo("anything", "c", 1500.0), 0).unwrap();
    let out = tick(&mut mm, 0);
    assert_eq!(out.matches.len(), 1);
    assert_eq!(out.matches[0].pool, "anything");
    assert_eq!(mm.len(), 1);
}

#[test]
fn a_player_is_in_one_ticket_at_a_time() {
    let mut mm = matchmaker();
    let a = mm.add(solo("duo", "a", 1500.0), 0).unwrap();
    assert_eq!(
        mm.add(party("squad", &["b", "a"], 1500.0), 0),
        Err(Error::UserQueued {
            user_id: "a".into(),
            ticket: a
        })
    );
    assert_eq!(
        mm.add(party("squad", &["b", "b"], 1500.0), 0),
        Err(Error::DuplicateMember("b".into()))
    );
    // The failed adds left nothing behind.
    assert_eq!(mm.len(), 1);
    assert_eq!(mm.ticket_of("b"), None);
    mm.check_invariants();
    // Once matched, the player may queue again.
    mm.add(solo("duo", "b", 1500.0), 0).unwrap();
    assert_eq!(tick(&mut mm, 0).matches.len(), 1);
    assert!(mm.add(solo("duo", "a", 1500.0), 1).is_ok());
}

#[test]
fn removal_by_ticket_and_by_user() {
    let mut mm = matchmaker();
    let a = mm.add(party("squad", &["a1", "a2"], 1500.0), 0).unwrap();
    let b = mm.add(solo("squad", "b", 1500.0), 0).unwrap();
    let c = mm.add(solo("squad", "c", 1500.0), 0).unwrap();
    let removed = mm.remove_user("a2").unwrap();
    assert_eq!(removed.id, a);
    assert_eq!(removed.ticket.players(), 2);
    assert_eq!(mm.ticket_of("a1"), None, "the whole party left");
    assert_eq!(mm.remove(b).map(|q| q.id), Some(b));
    assert_eq!(mm.remove(b), None);
    assert_eq!(mm.remove_user("nobody"), None);
    assert_eq!(mm.remove(TicketId(999)), None);
    mm.check_invariants();
    assert_eq!(mm.tickets().map(|q| q.id).collect::<Vec<_>>(), [c]);
    // The removed tickets are not matched, even after the fill wait.
    assert!(tick(&mut mm, 60_000).matches.is_empty());
}

#[test]
fn a_reused_slot_is_not_confused_with_its_previous_ticket() {
    let mut mm = matchmaker();
    let a = mm.add(solo("duo", "a", 1500.0), 0).unwrap();
    mm.add(solo("duo", "b", 3000.0), 0).unwrap();
    assert!(tick(&mut mm, 0).matches.is_empty());
    // "a" leaves, "c" takes its slot, far from "b" in skill; "d" is close to "c".
    mm.remove(a).unwrap();
    let c = mm.add(solo("duo", "c", 100.0), 0).unwrap();
    assert_eq!(mm.get(a), None);
    assert_eq!(
        mm.get(c).map(|q| q.ticket.members[0].user_id.as_str()),
        Some("c")
    );
    mm.add(solo("duo", "d", 120.0), 0).unwrap();
    let out = tick(&mut mm, 0);
    assert_eq!(out.matches.len(), 1);
    assert_eq!(
        users_of(&out.matches[0]),
        ["c", "d"].map(str::to_owned).into()
    );
}

#[test]
fn expiry_is_exact() {
    let mut mm = matchmaker();
    let a = mm
        .add(solo("duo", "a", 1500.0).expires_at(1_000), 0)
        .unwrap();
    assert!(tick(&mut mm, 999).expired.is_empty());
    mm.add(solo("duo", "b", 1500.0), 999).unwrap();
    // At 1000 "a" is gone before matching starts: "b" finds nobody.
    let out = tick(&mut mm, 1_000);
    assert_eq!(out.expired, vec![a]);
    assert!(out.matches.is_empty());
    assert_eq!(
        mm.add(solo("duo", "c", 1500.0).expires_at(5), 5),
        Err(Error::AlreadyExpired)
    );
}

#[test]
fn expiry_of_removed_and_matched_tickets_is_not_reported() {
    let mut mm = matchmaker();
    let a = mm.add(solo("duo", "a", 1500.0).expires_at(100), 0).unwrap();
    mm.add(solo("duo", "b", 1500.0).expires_at(100), 0).unwrap();
    mm.add(solo("duo", "c", 1500.0).expires_at(100), 0).unwrap();
    mm.remove(a);
    assert_eq!(tick(&mut mm, 0).matches.len(), 1);
    assert!(tick(&mut mm, 1_000).expired.is_empty());
}

#[test]
fn time_may_go_backwards_without_harm() {
    let mut mm = matchmaker();
    mm.add(solo("duo", "a", 1500.0), 10_000).unwrap();
    mm.add(solo("duo", "b", 1900.0), 10_000).unwrap();
    // Waits saturate at zero.
    assert!(tick(&mut mm, 0).matches.is_empty());
    assert!(tick(&mut mm, 5_000).matches.is_empty());
    let out = tick(&mut mm, 16_000);
    assert_eq!(out.matches.len(), 1);
    assert_eq!(out.matches[0].quality.max_wait_ms, 6_000);
}

#[test]
fn zero_candidates_only_matches_whole_parties() {
    let mut mm = Matchmaker::new(MatchmakerConfig {
        max_candidates: 0,
        ..MatchmakerConfig::default().with_pool("duo", duo())
    })
    .unwrap();
    mm.add(solo("duo", "a", 1500.0), 0).unwrap();
    mm.add(solo("duo", "b", 1500.0), 0).unwrap();
    mm.add(party("duo", &["c", "d"], 1500.0), 0).unwrap();
    let out = tick(&mut mm, 0);
    assert_eq!(out.matches.len(), 1);
    assert_eq!(out.matches[0].tickets.len(), 1);
}

#[test]
fn tickets_are_validated() {
    let mut mm = Matchmaker::new(
        MatchmakerConfig {
            limits: Limits {
                max_tickets: 2,
                max_string_len: 8,
                max_properties: 2,
                max_clauses: 2,
                max_regions: 2,
            },
            ..MatchmakerConfig::default()
        }
        .with_pool("duo", duo()),
    )
    .unwrap();
    let ok = || solo("duo", "u", 1500.0);
    let cases: Vec<(Ticket, Error)> = vec![
        (solo("nope", "u", 1.0), Error::UnknownPool("nope".into())),
        (Ticket::new("duo", vec![]), Error::EmptyParty),
        (
            party("duo", &["a", "b", "c"], 1.0),
            Error::PartyTooLarge {
                players: 3,
                max_players: 2,
            },
        ),
        (solo("duo", "", 1.0), Error::EmptyUserId),
        (
            solo("duo", "much-too-long", 1.0),
            Error::StringTooLong {
                what: "user id",
                len: 13,
            },
        ),
        (solo("duo", "u", f64::NAN), Error::InvalidSkill),
        (solo("duo", "u", f64::INFINITY), Error::InvalidSkill),
        (
            ok().with_number("lvl", f64::NEG_INFINITY),
            Error::InvalidNumber("lvl".into()),
        ),
        (
            ok().must(Clause::range("lvl", Some(f64::NAN), None)),
            Error::InvalidRange("lvl".into()),
        ),
        (
            ok().must_not(Clause::range("lvl", Some(2.0), Some(1.0))),
            Error::InvalidRange("lvl".into()),
        ),
        (
            ok().with_latency("", 5),
            Error::InvalidRegion(String::new()),
        ),
        (
            ok().with_latency("eu", 5).with_latency("eu", 6),
            Error::InvalidRegion("eu".into()),
        ),
        (
            ok().with_string("a", "1")
                .with_string("b", "2")
                .with_number("c", 3.0),
            Error::TooMany {
                what: "properties",
                count: 3,
                max: 2,
            },
        ),
        (
            ok().must(Clause::eq("a", "1"))
                .must(Clause::eq("b", "1"))
                .must_not(Clause::eq("c", "1")),
            Error::TooMany {
                what: "clauses",
                count: 3,
                max: 2,
            },
        ),
        (
            ok().with_latency("a", 1)
                .with_latency("b", 1)
                .with_latency("c", 1),
            Error::TooMany {
                what: "regions",
                count: 3,
                max: 2,
            },
        ),
        (
            ok().with_string("key", "valuetoolong"),
            Error::StringTooLong {
                what: "property value",
                len: 12,
            },
        ),
        (ok().expires_at(0), Error::AlreadyExpired),
    ];
    for (ticket, error) in cases {
        assert_eq!(mm.add(ticket.clone(), 0), Err(error), "{ticket:?}");
    }
    assert!(mm.is_empty());
    mm.check_invariants();
    // Extreme but valid values are fine: a large finite skill, empty property strings,
    // infinite range bounds.
    mm.add(
        solo("duo", "a", -1e300)
            .with_string("", "")
            .must(Clause::range(
                "",
                Some(f64::NEG_INFINITY),
                Some(f64::INFINITY),
            )),
        0,
    )
    .unwrap();
    mm.add(solo("duo", "b", 1e300), 0).unwrap();
    assert_eq!(mm.add(solo("duo", "c", 1.0), 0), Err(Error::Full));
    assert!(tick(&mut mm, u64::MAX - 1).matches.is_empty());
}

#[test]
fn configurations_are_validated() {
    let bad_pools = [
        PoolConfig {
            min_players: 0,
            ..duo()
        },
        PoolConfig {
            min_players: 3,
            max_players: 2,
            ..duo()
        },
        PoolConfig {
            skill_window: Widening::new(f64::NAN, 1.0, 2.0),
            ..duo()
        },
        PoolConfig {
            skill_window: Widening::new(1.0, f64::INFINITY, 2.0),
            ..duo()
        },
        PoolConfig {
            latency_limit: Widening::new(5.0, 1.0, 2.0),
            ..duo()
        },
        PoolConfig {
            latency_limit: Widening::new(-1.0, 1.0, 2.0),
            ..duo()
        },
    ];
    for pool in bad_pools {
        let config = MatchmakerConfig::default().with_pool("p", pool);
        assert!(
            matches!(Matchmaker::new(config), Err(Error::InvalidConfig(_))),
            "{pool:?}"
        );
        let config = MatchmakerConfig {
            default_pool: Some(pool),
            ..MatchmakerConfig::default()
        };
        assert!(Matchmaker::new(config).is_err());
    }
    assert!(Matchmaker::new(MatchmakerConfig::default()).is_ok());
}

#[test]
fn errors_display() {
    let e = Error::UserQueued {
        user_id: "a".into(),
        ticket: TicketId(3),
    };
    assert_eq!(e.to_string(), "user \"a\" is already queued in ticket#3");
    assert!(Error::Full.to_string().contains("full"));
}

#[test]
fn nothing_leaks_once_everyone_left() {
    let mut mm = matchmaker();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for i in 0..500 {
        let t = random_ticket(&mut rng, i).expires_at(rng.gen_range(1..20_000));
        let _ = mm.add(t, 0);
    }
    tick(&mut mm, 0);
    tick(&mut mm, 10_000);
    let ids: Vec<_> = mm.tickets().map(|q| q.id).take(50).collect();
    for id in ids {
        mm.remove(id).unwrap();
    }
    tick(&mut mm, 20_000);
    assert!(mm.is_empty());
    assert!(mm.pools.is_empty());
    assert_eq!(mm.interner.live(), 0);
}

// ---------------------------------------------------------------------------------------------
// Determinism

fn random_ticket(rng: &mut ChaCha8Rng, n: usize) -> Ticket {
    let pool = if rng.gen_bool(0.5) { "duo" } else { "squad" };
    let size = if pool == "duo" {
        1
    } else {
        rng.gen_range(1..=3)
    };
    let members = (0..size)
        .map(|i| Member::new(format!("p{n}-{i}"), rng.gen_range(1000.0..2000.0)))
        .collect();
    let mut t = Ticket::new(pool, members)
        .with_string("map", ["a", "b", "c"][rng.gen_range(0..3)])
        .with_number("level", f64::from(rng.gen_range(0..10)));
    for region in ["eu", "us", "asia"] {
        if rng.gen_bool(0.7) {
            t = t.with_latency(region, rng.gen_range(10..200));
        }
    }
    if rng.gen_bool(0.3) {
        t = t.must(Clause::eq("map", ["a", "b", "c"][rng.gen_range(0..3)]));
    }
    if rng.gen_bool(0.2) {
        let lo = f64::from(rng.gen_range(0..10));
        t = t.must_not(Clause::range("level", Some(lo), Some(lo + 2.0)));
    }
    t
}

/// Runs a seeded random workload and returns everything it observed.
fn run_workload(seed: u64) -> (Vec<Result<TicketId, Error>>, Vec<TickOutput>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mm = matchmaker();
    let (mut adds, mut ticks) = (Vec::new(), Vec::new());
    let mut now = 0;
    for round in 0..40 {
        for i in 0..rng.gen_range(0..40) {
            let t = random_ticket(&mut rng, round * 100 + i).expires_at(now + 30_000);
            adds.push(mm.add(t, now));
        }
        if rng.gen_bool(0.3) {
            let user = format!("p{}-0", rng.gen_range(0..round * 100 + 1));
            mm.remove_user(&user);
        }
        now += rng.gen_range(0..2_000);
        ticks.push(mm.tick(now));
    }
    (adds, ticks)
}

#[test]
fn same_inputs_give_same_outputs() {
    let first = run_workload(11);
    assert!(first.1.iter().map(|t| t.matches.len()).sum::<usize>() > 100);
    assert_eq!(first, run_workload(11));
    assert_ne!(first, run_workload(12));
}

// ---------------------------------------------------------------------------------------------
// Property tests: an independent statement of the rules, checked on every match.

/// The reference semantics of a clause, written independently of the crate's.
fn clause_holds(clause: &Clause, p: &Properties) -> bool {
    match clause {
        Clause::Eq { key, value } => p.strings.get(key).is_some_and(|v| v == value),
        Clause::Range { key, min, max } => match p.numbers.get(key) {
            None => false,
            Some(&x) => !matches!(min, Some(m) if *m > x) && !matches!(max, Some(m) if *m < x),
        },
    }
}

fn accepts(a: &Ticket, b: &Ticket) -> bool {
    a.query.must.iter().all(|c| clause_holds(c, &b.properties))
        && a.query
            .must_not
            .iter()
            .all(|c| !clause_holds(c, &b.properties))
}

#[derive(Debug, Clone)]
enum Op {
    Add(Ticket, u64),
    Tick(u64),
    Remove(usize),
    RemoveUser(usize),
}

const USERS: usize = 64;

fn arb_ticket() -> impl Strategy<Value = Ticket> {
    let size = prop_oneof![7 => Just(1usize), 2 => Just(2), 1 => Just(3)];
    let members = size
        .prop_flat_map(|n| prop::collection::vec((0..USERS, 1000.0..2000.0f64), n))
        .prop_map(|m| {
            m.into_iter()
                .map(|(u, skill)| Member::new(format!("u{u}"), skill))
                .collect::<Vec<_>>()
        });
    let strings = prop::collection::btree_map(
        prop::sample::select(vec!["map", "lang"]),
        prop::sample::select(vec!["a", "b", "c"]),
        0..=2,
    );
    let numbers = prop::option::of(0..20u32);
    let clause = prop_oneof![
        (
            prop::sample::select(vec!["map", "lang"]),
            prop::sample::select(vec!["a", "b", "c"])
        )
            .prop_map(|(k, v)| Clause::eq(k, v)),
        (prop::option::of(0..20u32), 0..10u32).prop_map(|(lo, width)| {
            let lo = lo.map(f64::from);
            let hi = if width == 0 {
                None
            } else {
                Some(lo.unwrap_or(0.0) + f64::from(width))
            };
            Clause::range("level", lo, hi)
        }),
    ];
    let must = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec(clause.clone(), 1..=2),
    ];
    let must_not = prop_oneof![
        4 => Just(Vec::new()),
        1 => prop::collection::vec(clause, 1..=1),
    ];
    let latencies = prop::collection::btree_map(
        prop::sample::select(vec!["eu", "us", "asia"]),
        5..250u32,
        0..=3,
    );
    let pool = prop_oneof![
        4 => Just("duo"),
        4 => Just("squad"),
        2 => Just("battle"),
        1 => Just("unknown"),
    ];
    let expiry = prop_oneof![Just(None), (1..40_000u64).prop_map(Some)];
    (
        pool, members, strings, numbers, must, must_not, latencies, expiry,
    )
        .prop_map(
            |(pool, members, strings, level, must, must_not, latencies, expiry)| {
                let mut t = Ticket::new(pool, members);
                for (k, v) in strings {
                    t = t.with_string(k, v);
                }
                if let Some(level) = level {
                    t = t.with_number("level", f64::from(level));
                }
                t.query = Query { must, must_not };
                t.latencies = latencies
                    .into_iter()
                    .map(|(r, rtt)| (r.to_owned(), rtt))
                    .collect();
                // A relative expiry, made absolute when added.
                t.expires_at_ms = expiry.unwrap_or(u64::MAX);
                t
            },
        )
}

fn arb_widening(
    initial: std::ops::Range<f64>,
    grow: f64,
    extra: f64,
) -> impl Strategy<Value = Widening> {
    (initial, 0.0..grow, 0.0..extra).prop_map(|(i, g, e)| Widening::new(i, g, i + e))
}

fn arb_pool() -> impl Strategy<Value = PoolConfig> {
    (
        prop_oneof![1 => Just(1u32), 4 => 2..=4u32],
        0..=4u32,
        0..8_000u64,
        arb_widening(0.0..300.0, 200.0, 1200.0),
        arb_widening(0.0..150.0, 40.0, 200.0),
    )
        .prop_map(|(min, extra, fill, skill, latency)| PoolConfig {
            min_players: min,
            max_players: min + extra,
            fill_wait_ms: fill,
            skill_window: skill,
            latency_limit: latency,
        })
}

fn arb_config() -> impl Strategy<Value = MatchmakerConfig> {
    (arb_pool(), arb_pool(), arb_pool(), 1..48usize).prop_map(|(a, b, c, k)| MatchmakerConfig {
        max_candidates: k,
        ..MatchmakerConfig::default()
            .with_pool("duo", a)
            .with_pool("squad", b)
            .with_pool("battle", c)
    })
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (arb_ticket(), 0..1_500u64).prop_map(|(t, dt)| Op::Add(t, dt)),
        3 => (0..6_000u64).prop_map(Op::Tick),
        1 => (0..64usize).prop_map(Op::Remove),
        1 => (0..USERS).prop_map(Op::RemoveUser),
    ];
    prop::collection::vec(op, 1..100)
}

/// The test's own record of what should be queued.
#[derive(Default)]
struct Model {
    queued: BTreeMap<TicketId, QueuedTicket>,
    added: Vec<TicketId>,
}

impl Model {
    fn user_ticket(&self, user: &str) -> Option<TicketId> {
        self.queued
            .values()
            .find(|q| q.ticket.members.iter().any(|m| m.user_id == user))
            .map(|q| q.id)
    }
}

/// Checks one add against the rules and records it.
fn check_add(
    mm: &mut Matchmaker,
    model: &mut Model,
    config: &MatchmakerConfig,
    mut ticket: Ticket,
    now: u64,
) -> Result<(), TestCaseError> {
    if ticket.expires_at_ms != u64::MAX {
        ticket.expires_at_ms += now;
    }
    let result = mm.add(ticket.clone(), now);
    let users: Vec<&str> = ticket.members.iter().map(|m| m.user_id.as_str()).collect();
    let distinct: BTreeSet<&str> = users.iter().copied().collect();
    let expected_err = match config.pool(&ticket.pool) {
        None => Some(Error::UnknownPool(ticket.pool.clone())),
        Some(pool) if ticket.players() > pool.max_players as usize => Some(Error::PartyTooLarge {
            players: ticket.players(),
            max_players: pool.max_players,
        }),
        Some(_) if distinct.len() < users.len() => None, // DuplicateMember, checked below
        Some(_) => users
            .iter()
            .find_map(|u| model.user_ticket(u).map(|t| (u, t)))
            .map(|(u, t)| Error::UserQueued {
                user_id: (*u).to_owned(),
                ticket: t,
            }),
    };
    match (&result, expected_err) {
        (Err(Error::DuplicateMember(u)), None) => {
            prop_assert!(distinct.len() < users.len() && users.contains(&u.as_str()));
        }
        (Err(e), Some(expected)) => prop_assert_eq!(e, &expected),
        (Err(e), None) => prop_assert!(false, "unexpected refusal {e:?} of {ticket:?}"),
        (Ok(id), None) => {
            prop_assert!(distinct.len() == users.len());
            model.queued.insert(
                *id,
                QueuedTicket {
                    id: *id,
                    enqueued_at_ms: now,
                    ticket,
                },
            );
            model.added.push(*id);
        }
        (Ok(_), Some(expected)) => prop_assert!(false, "accepted, expected {expected:?}"),
    }
    Ok(())
}

/// Checks one tick's output against the model and every rule.
fn check_tick(
    mm: &Matchmaker,
    model: &mut Model,
    config: &MatchmakerConfig,
    out: &TickOutput,
    now: u64,
) -> Result<(), TestCaseError> {
    // Expiry: exactly the queued tickets whose time has come, and they are not matched.
    let due: Vec<TicketId> = model
        .queued
        .values()
        .filter(|q| q.ticket.expires_at_ms <= now)
        .map(|q| q.id)
        .collect();
    prop_assert_eq!(&out.expired, &due);
    for id in &due {
        model.queued.remove(id);
    }

    let mut seen_users = BTreeSet::new();
    for m in &out.matches {
        let pool = config.pool(&m.pool).expect("match in a configured pool");
        let mut players = 0u32;
        for t in &m.tickets {
            // Queued, unexpired, intact (parties are never split or altered).
            let queued = model.queued.remove(&t.id);
            prop_assert_eq!(queued.as_ref(), Some(t), "matched ticket not queued as is");
            prop_assert!(t.ticket.expires_at_ms > now);
            prop_assert_eq!(&t.ticket.pool, &m.pool);
            for member in &t.ticket.members {
                prop_assert!(
                    seen_users.insert(member.user_id.clone()),
                    "player in two matches"
                );
                prop_assert_eq!(
                    mm.ticket_of(&member.user_id),
                    None,
                    "matched player still queued"
                );
            }
            prop_assert_eq!(mm.get(t.id), None);
            players += t.ticket.players() as u32;
        }
        prop_assert!(m.tickets.windows(2).all(|w| w[0].id < w[1].id));

        // Size.
        prop_assert!(players >= pool.min_players && players <= pool.max_players);
        let max_wait = m
            .tickets
            .iter()
            .map(|t| now.saturating_sub(t.enqueued_at_ms))
            .max()
            .unwrap();
        if players < pool.max_players {
            prop_assert!(
                max_wait >= pool.fill_wait_ms,
                "partial match before the fill wait"
            );
        }

        // Hard constraints, every ordered pair.
        for a in &m.tickets {
            for b in &m.tickets {
                if a.id != b.id {
                    prop_assert!(accepts(&a.ticket, &b.ticket), "{:?} refuses {:?}", a, b);
                }
            }
        }

        // Skill: within every ticket's own window, each bounded by the maximum.
        let skills: Vec<f64> = m
            .tickets
            .iter()
            .map(|t| t.ticket.skill().unwrap())
            .collect();
        let spread = skills.iter().cloned().fold(f64::MIN, f64::max)
            - skills.iter().cloned().fold(f64::MAX, f64::min);
        for t in &m.tickets {
            let window = pool.skill_window.at(t.waited_ms(now));
            prop_assert!(window <= pool.skill_window.max);
            prop_assert!(spread <= window, "spread {spread} beyond window {window}");
        }

        // Region: within every reporting ticket's own limit (each bounded by the maximum), and
        // the best such region.
        for t in &m.tickets {
            prop_assert!(pool.latency_limit.at(t.waited_ms(now)) <= pool.latency_limit.max);
        }
        let reporting: Vec<&QueuedTicket> = m
            .tickets
            .iter()
            .filter(|t| !t.ticket.latencies.is_empty())
            .collect();
        let worst_in = |region: &str| -> Option<u32> {
            reporting.iter().try_fold(0, |worst, t| {
                let rtt = t.ticket.latency(region)?;
                let limit = pool.latency_limit.at(t.waited_ms(now));
                (f64::from(rtt) <= limit).then_some(worst.max(rtt))
            })
        };
        match &m.region {
            None => {
                prop_assert!(reporting.is_empty());
                prop_assert_eq!(m.quality.max_latency_ms, None);
            }
            Some(region) => {
                prop_assert!(!reporting.is_empty());
                let worst = worst_in(region);
                prop_assert!(worst.is_some(), "region {region} breaks a latency limit");
                prop_assert_eq!(m.quality.max_latency_ms, worst);
                for (other, _) in &reporting[0].ticket.latencies {
                    if let Some(w) = worst_in(other) {
                        prop_assert!(
                            (worst.unwrap(), region.as_str()) <= (w, other.as_str()),
                            "{other} ({w} ms) beats {region}"
                        );
                    }
                }
            }
        }

        // Quality, recomputed.
        prop_assert_eq!(m.quality.skill_spread, spread);
        prop_assert_eq!(m.quality.max_wait_ms, max_wait);
        prop_assert_eq!(m.quality.players, players);
    }

    // What is left is exactly the model, and nothing left is due to expire.
    let left: Vec<TicketId> = mm.tickets().map(|q| q.id).collect();
    let expected: Vec<TicketId> = model.queued.keys().copied().collect();
    prop_assert_eq!(left, expected);
    prop_assert_eq!(mm.len(), model.queued.len());
    Ok(())
}

fn run_ops(config: MatchmakerConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut mm = Matchmaker::new(config.clone()).unwrap();
    let mut model = Model::default();
    let mut now = 0;
    for op in ops {
        match op {
            Op::Add(ticket, dt) => {
                now += dt;
                check_add(&mut mm, &mut model, &config, ticket, now)?;
            }
            Op::Tick(dt) => {
                now += dt;
                let out = mm.tick(now);
                check_tick(&mm, &mut model, &config, &out, now)?;
            }
            Op::Remove(i) => {
                if let Some(&id) = model.added.get(i) {
                    let removed = mm.remove(id);
                    prop_assert_eq!(removed, model.queued.remove(&id));
                }
            }
            Op::RemoveUser(u) => {
                let user = format!("u{u}");
                let expected = model
                    .user_ticket(&user)
                    .and_then(|id| model.queued.remove(&id));
                prop_assert_eq!(mm.remove_user(&user), expected);
            }
        }
        mm.check_invariants();
    }
    // Let everything still queued run its course.
    for _ in 0..3 {
        now += 20_000;
        let out = mm.tick(now);
        check_tick(&mm, &mut model, &config, &out, now)?;
        mm.check_invariants();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_match_obeys_every_rule(config in arb_config(), ops in arb_ops()) {
        run_ops(config, ops)?;
    }

    #[test]
    fn random_workloads_are_deterministic(config in arb_config(), ops in arb_ops()) {
        let run = |ops: &[Op]| {
            let mut mm = Matchmaker::new(config.clone()).unwrap();
            let mut now = 0;
            let mut log = Vec::new();
            for op in ops {
                match op {
                    Op::Add(t, dt) => {
                        now += dt;
                        log.push(format!("{:?}", mm.add(t.clone(), now)));
                    }
                    Op::Tick(dt) => {
                        now += dt;
                        log.push(format!("{:?}", mm.tick(now)));
                    }
                    Op::Remove(i) => log.push(format!("{:?}", mm.remove(TicketId(*i as u64)))),
                    Op::RemoveUser(u) => log.push(format!("{:?}", mm.remove_user(&format!("u{u}")))),
                }
            }
            log
        };
        prop_assert_eq!(run(&ops), run(&ops));
    }

    /// With nothing to keep them apart, the matchmaker pairs up everyone but at most one.
    #[test]
    fn compatible_players_all_get_matched(skills in prop::collection::vec(0.0..3000.0f64, 0..60)) {
        let config = MatchmakerConfig::default().with_pool("duo", PoolConfig {
            skill_window: Widening::new(0.0, 1000.0, 3000.0),
            ..duo()
        });
        let mut mm = Matchmaker::new(config).unwrap();
        for (i, &s) in skills.iter().enumerate() {
            mm.add(solo("duo", &format!("u{i}"), s), 0).unwrap();
        }
        let mut matched = 0;
        for now in (0..=4_000).step_by(1_000) {
            matched += mm.tick(now).matches.len();
        }
        prop_assert_eq!(matched, skills.len() / 2);
        prop_assert_eq!(mm.len(), skills.len() % 2);
    }

    /// Arbitrary numbers never panic the matchmaker: they are refused or handled.
    #[test]
    fn arbitrary_numbers_are_refused_or_handled(
        skills in prop::collection::vec(any::<f64>(), 1..3),
        level in any::<f64>(),
        lo in prop::option::of(any::<f64>()),
        hi in prop::option::of(any::<f64>()),
        rtt in any::<u32>(),
        now in any::<u64>(),
        later in any::<u64>(),
    ) {
        let mut mm = matchmaker();
        let members = skills.iter().enumerate().map(|(i, &s)| Member::new(format!("u{i}"), s)).collect();
        let t = Ticket::new("squad", members)
            .with_number("level", level)
            .must(Clause::range("level", lo, hi))
            .with_latency("eu", rtt);
        let _ = mm.add(t, now);
        let _ = mm.add(solo("squad", "x", 1500.0).with_number("level", 1.0), now);
        let out = mm.tick(later);
        mm.check_invariants();
        for m in out.matches {
            prop_assert!(m.quality.skill_spread.is_finite());
        }
    }
}
