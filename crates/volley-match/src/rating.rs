//! Glicko-2 skill ratings, after Mark Glickman, "Example of the Glicko-2 system" (2013).
//!
//! Ratings are kept on the familiar Glicko scale (1500 / 350 / 0.06 for a new player) and
//! converted to the internal Glicko-2 scale only inside [`update`]. One call to [`update`] is one
//! rating period: every game the player played in it, rated against the opponents' ratings as
//! they were at the start of the period.
//!
//! Nothing here panics or returns a non-finite number, whatever the input: see [`update`] for how
//! invalid values (NaN, infinities, non-positive deviations) are handled.

use serde::{Deserialize, Serialize};

/// Factor between the Glicko and the Glicko-2 scale (400 / ln 10).
pub const SCALE: f64 = 173.7178;
/// Rating of a new player.
pub const DEFAULT_RATING: f64 = 1500.0;
/// Deviation of a new player; also the largest deviation [`update`] ever returns.
pub const DEFAULT_DEVIATION: f64 = 350.0;
/// Volatility of a new player.
pub const DEFAULT_VOLATILITY: f64 = 0.06;
/// Smallest deviation kept: nobody's skill is known to within less than a rating point, and
/// the arithmetic stays clear of underflow.
pub const MIN_DEVIATION: f64 = 1.0;
/// Smallest volatility kept, for the same numerical reason.
pub const MIN_VOLATILITY: f64 = 1e-6;
/// A reasonable system constant τ (Glickman suggests 0.3 to 1.2).
pub const DEFAULT_TAU: f64 = 0.5;
/// Most players [`update_match`] rates in one match (it rates every pair, so its cost is
/// quadratic in the player count).
pub const MAX_MATCH_PLAYERS: usize = 1024;

/// Convergence tolerance of the volatility iteration (the paper's ε).
const EPSILON: f64 = 1e-6;
/// Bound on either loop of the volatility iteration; it converges in a handful of steps on any
/// sane input, the bound only guards against pathological ones.
const MAX_ITERATIONS: usize = 1000;

/// A player's skill estimate on the Glicko scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// Estimated skill (1500 for a new player).
    pub rating: f64,
    /// Uncertainty of the estimate, one standard deviation (350 for a new player).
    pub deviation: f64,
    /// Expected fluctuation of the player's skill (0.06 for a new player).
    pub volatility: f64,
}

impl Default for Rating {
    fn default() -> Self {
        Self::new(DEFAULT_RATING, DEFAULT_DEVIATION, DEFAULT_VOLATILITY)
    }
}

impl Rating {
    /// A rating with the given fields.
    pub const fn new(rating: f64, deviation: f64, volatility: f64) -> Self {
        Self {
            rating,
            deviation,
            volatility,
        }
    }

    /// Whether every field is usable: finite, with a positive deviation and volatility.
    pub fn is_valid(&self) -> bool {
        self.rating.is_finite()
            && self.deviation.is_finite()
            && self.deviation > 0.0
            && self.volatility.is_finite()
            && self.volatility > 0.0
    }

    /// This rating with every unusable field replaced by the new-player default: a non-finite
    /// rating becomes 1500, a non-finite or non-positive deviation 350, a non-finite or
    /// non-positive volatility 0.06. Deviations are then clamped to
    /// [`MIN_DEVIATION`]`..=`[`DEFAULT_DEVIATION`] and volatilities raised to at least
    /// [`MIN_VOLATILITY`].
    pub fn sanitized(self) -> Self {
        let rating = if self.rating.is_finite() {
            self.rating
        } else {
            DEFAULT_RATING
        };
        let deviation = if self.deviation.is_finite() && self.deviation > 0.0 {
            self.deviation.clamp(MIN_DEVIATION, DEFAULT_DEVIATION)
        } else {
            DEFAULT_DEVIATION
        };
        let volatility = if self.volatility.is_finite() && self.volatility > 0.0 {
            self.volatility.max(MIN_VOLATILITY)
        } else {
            DEFAULT_VOLATILITY
        };
        Self::new(rating, deviation, volatility)
    }

    /// The expected score (0..=1) of this player against `opponent`, accounting for the
    /// opponent's deviation as Glicko-2 does.
    pub fn expected_score(&self, opponent: &Rating) -> f64 {
        let me = self.sanitized();
        let them = opponent.sanitized();
        expectation(
            to_mu(me.rating),
            to_mu(them.rating),
            g(them.deviation / SCALE),
        )
    }
}

/// The result of one game, from the rated player's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Score 1.
    Win,
    /// Score 0.5.
    Draw,
    /// Score 0.
    Loss,
    /// A fractional score; clamped to 0..=1. A NaN score makes the game count for nothing.
    Score(f64),
}

impl Outcome {
    /// The score in 0..=1, or `None` for a NaN [`Outcome::Score`].
    pub fn score(self) -> Option<f64> {
        match self {
            Outcome::Win => Some(1.0),
            Outcome::Draw => Some(0.5),
            Outcome::Loss => Some(0.0),
            Outcome::Score(s) if s.is_nan() => None,
            Outcome::Score(s) => Some(s.clamp(0.0, 1.0)),
        }
    }
}

/// Why [`update_match`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RatingError {
    /// `ratings` and `placements` have different lengths.
    LengthMismatch {
        /// Number of ratings.
        ratings: usize,
        /// Number of placements.
        placements: usize,
    },
    /// More than [`MAX_MATCH_PLAYERS`] players.
    TooManyPlayers {
        /// Number of players given.
        players: usize,
    },
}

impl std::fmt::Display for RatingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RatingError::LengthMismatch {
                ratings,
                placements,
            } => write!(f, "{ratings} ratings but {placements} placements"),
            RatingError::TooManyPlayers { players } => write!(
                f,
                "{players} players in one match (at most {MAX_MATCH_PLAYERS} are rated)"
            ),
        }
    }
}

impl std::error::Error for RatingError {}

fn to_mu(rating: f64) -> f64 {
    (rating - DEFAULT_RATING) / SCALE
}

/// The paper's g(φ): how much a game against an opponent of deviation φ is discounted.
fn g(phi: f64) -> f64 {
    1.0 / (1.0 + 3.0 * phi * phi / (std::f64::consts::PI * std::f64::consts::PI)).sqrt()
}

/// The paper's E(μ, μⱼ, φⱼ), with g(φⱼ) precomputed.
fn expectation(mu: f64, mu_j: f64, g_j: f64) -> f64 {
    1.0 / (1.0 + (-g_j * (mu - mu_j)).exp())
}

/// Clamps a deviation on the Glicko scale into `MIN_DEVIATION ..= DEFAULT_DEVIATION`.
fn clamp_deviation(deviation: f64) -> f64 {
    deviation.clamp(MIN_DEVIATION, DEFAULT_DEVIATION)
}

/// The rating after a period without games: only the deviation grows (capped at 350).
fn idle(player: Rating) -> Rating {
    let phi = player.deviation / SCALE;
    let phi_star = (phi * phi + player.volatility * player.volatility).sqrt();
    let deviation = if phi_star.is_finite() {
        clamp_deviation(phi_star * SCALE)
    } else {
        DEFAULT_DEVIATION
    };
    Rating::new(player.rating, deviation, player.volatility)
}

/// The new volatility σ′ by the Illinois variant of regula falsi (step 5 of the paper).
fn new_volatility(phi: f64, sigma: f64, v: f64, delta: f64, tau: f64) -> f64 {
    let a = (sigma * sigma).ln();
    let phi2 = phi * phi;
    let delta2 = delta * delta;
    let f = |x: f64| {
        let ex = x.exp();
        let denom = phi2 + v + ex;
        ex * (delta2 - phi2 - v - ex) / (2.0 * denom * denom) - (x - a) / (tau * tau)
    };

    let mut big_a = a;
    let mut big_b = if delta2 > phi2 + v {
        (delta2 - phi2 - v).ln()
    } else {
        let mut k = 1.0;
        let mut steps = 0;
        while f(a - k * tau) < 0.0 && steps < MAX_ITERATIONS {
            k += 1.0;
            steps += 1;
        }
        a - k * tau
    };
    let mut f_a = f(big_a);
    let mut f_b = f(big_b);
    let mut steps = 0;
    while (big_b - big_a).abs() > EPSILON && steps < MAX_ITERATIONS {
        let c = big_a + (big_a - big_b) * f_a / (f_b - f_a);
        let f_c = f(c);
        if f_c * f_b <= 0.0 {
            big_a = big_b;
            f_a = f_b;
        } else {
            f_a /= 2.0;
        }
        big_b = c;
        f_b = f_c;
        steps += 1;
    }
    (big_a / 2.0).exp()
}

/// One Glicko-2 rating period for `player`: the new rating after the given games, each an
/// opponent's rating at the start of the period and the outcome for `player`. `tau` is the
/// system constant τ constraining volatility changes ([`DEFAULT_TAU`] is a sound choice).
///
/// With no games, only the deviation grows (by the volatility), as the paper prescribes.
///
/// Invalid input is handled, never propagated: `player` and every opponent are
/// [`Rating::sanitized`] first, games with a NaN score are ignored, a non-finite or non-positive
/// `tau` is replaced by [`DEFAULT_TAU`], and if the games carry no information (ratings so far
/// apart that every result was certain) or the arithmetic overflows, the period counts as one
/// without games. The returned deviation lies in [`MIN_DEVIATION`]`..=`[`DEFAULT_DEVIATION`].
pub fn update(player: Rating, games: &[(Rating, Outcome)], tau: f64) -> Rating {
    let player = player.sanitized();
    let tau = if tau.is_finite() && tau > 0.0 {
        tau
    } else {
        DEFAULT_TAU
    };
    let mu = to_mu(player.rating);
    let phi = player.deviation / SCALE;

    // Steps 3 and 4: estimated variance v and improvement Δ (kept as Δ / v, the score sum).
    let mut information = 0.0;
    let mut score_sum = 0.0;
    let mut played = false;
    for (opponent, outcome) in games {
        let Some(score) = outcome.score() else {
            continue;
        };
        let opponent = opponent.sanitized();
        let g_j = g(opponent.deviation / SCALE);
        let e = expectation(mu, to_mu(opponent.rating), g_j);
        information += g_j * g_j * e * (1.0 - e);
        score_sum += g_j * (score - e);
        played = true;
    }
    let informative = played && information.is_finite() && information > 0.0;
    if !informative {
        return idle(player);
    }
    let v = 1.0 / information;
    let delta = v * score_sum;

    // Steps 5 to 7: new volatility, then the new deviation and rating.
    let sigma = new_volatility(phi, player.volatility, v, delta, tau);
    let phi_star = (phi * phi + sigma * sigma).sqrt();
    let phi_new = 1.0 / (1.0 / (phi_star * phi_star) + 1.0 / v).sqrt();
    let mu_new = mu + phi_new * phi_new * score_sum;

    let updated = Rating::new(
        mu_new * SCALE + DEFAULT_RATING,
        clamp_deviation(phi_new * SCALE),
        sigma.max(MIN_VOLATILITY),
    );
    if updated.is_valid() {
        updated
    } else {
        idle(player)
    }
}

/// Rates a multi-player match as one rating period: every pair of players is a game, the lower
/// placement winning and equal placements drawing (placements need not be contiguous, so
/// `[1, 2, 2, 4]` is fine). Every player is rated against the others' ratings from before the
/// match. Returns the new ratings in input order.
///
/// Fails if the lengths differ or there are more than [`MAX_MATCH_PLAYERS`] players; values are
/// handled as in [`update`].
pub fn update_match(
    ratings: &[Rating],
    placements: &[u32],
    tau: f64,
) -> Result<Vec<Rating>, RatingError> {
    if ratings.len() != placements.len() {
        return Err(RatingError::LengthMismatch {
            ratings: ratings.len(),
            placements: placements.len(),
        });
    }
    if ratings.len() > MAX_MATCH_PLAYERS {
        return Err(RatingError::TooManyPlayers {
            players: ratings.len(),
        });
    }
    let mut games = Vec::with_capacity(ratings.len().saturating_sub(1));
    let updated = ratings
        .iter()
        .zip(placements)
        .enumerate()
        .map(|(i, (&me, &my_place))| {
            games.clear();
            games.extend(
                ratings
                    .iter()
                    .zip(placements)
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, (&them, &their_place))| {
                        let outcome = match my_place.cmp(&their_place) {
                            std::cmp::Ordering::Less => Outcome::Win,
                            std::cmp::Ordering::Equal => Outcome::Draw,
                            std::cmp::Ordering::Greater => Outcome::Loss,
                        };
                        (them, outcome)
                    }),
            );
            update(me, &games, tau)
        })
        .collect();
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn glickman_worked_example() {
        let player = Rating::new(1500.0, 200.0, 0.06);
        let games = [
            (Rating::new(1400.0, 30.0, 0.06), Outcome::Win),
            (Rating::new(1550.0, 100.0, 0.06), Outcome::Loss),
            (Rating::new(1700.0, 300.0, 0.06), Outcome::Loss),
        ];
        let r = update(player, &games, 0.5);
        assert!(close(r.rating, 1464.06, 0.01), "rating {}", r.rating);
        assert!(
            close(r.deviation, 151.52, 0.01),
            "deviation {}",
            r.deviation
        );
        assert!(
            close(r.volatility, 0.05999, 0.00001),
            "volatility {}",
            r.volatility
        );
    }

    #[test]
    fn no_games_only_grows_the_deviation() {
        let player = Rating::new(1620.0, 80.0, 0.06);
        let r = update(player, &[], 0.5);
        assert_eq!(r.rating, 1620.0);
        assert_eq!(r.volatility, 0.06);
        let expected = ((80.0f64 / SCALE).powi(2) + 0.06f64.powi(2)).sqrt() * SCALE;
        assert!(close(r.deviation, expected, 1e-9));
        assert!(r.deviation > 80.0);
        // A new player's deviation is already the most uncertain there is.
        assert_eq!(update(Rating::default(), &[], 0.5).deviation, 350.0);
    }

    #[test]
    fn score_outcome_matches_named_outcomes() {
        let player = Rating::new(1500.0, 200.0, 0.06);
        let opp = Rating::new(1450.0, 60.0, 0.06);
        for (named, score) in [
            (Outcome::Win, 1.0),
            (Outcome::Draw, 0.5),
            (Outcome::Loss, 0.0),
        ] {
            assert_eq!(
                update(player, &[(opp, named)], 0.5),
                update(player, &[(opp, Outcome::Score(score))], 0.5)
            );
        }
        assert_eq!(Outcome::Score(7.0).score(), Some(1.0));
        assert_eq!(Outcome::Score(f64::NAN).score(), None);
    }

    #[test]
    fn two_player_match_is_two_games() {
        let a = Rating::new(1500.0, 200.0, 0.06);
        let b = Rating::new(1400.0, 30.0, 0.06);
        let rated = update_match(&[a, b], &[2, 1], 0.5);
        assert_eq!(
            rated,
            Ok(vec![
                update(a, &[(b, Outcome::Loss)], 0.5),
                update(b, &[(a, Outcome::Win)], 0.5),
            ])
        );
    }

    #[test]
    fn match_placements_order_the_results() {
        let field = [Rating::default(); 4];
        let Ok(rated) = update_match(&field, &[3, 1, 2, 2], 0.5) else {
            panic!("valid input refused");
        };
        assert!(rated[1].rating > rated[2].rating);
        assert_eq!(rated[2], rated[3]);
        assert!(rated[2].rating > rated[0].rating);
        // Symmetric field, zero-sum-ish: the winner gains what the loser drops.
        assert!(close(
            rated[1].rating - 1500.0,
            1500.0 - rated[0].rating,
            1e-6
        ));
    }

    #[test]
    fn match_input_errors() {
        assert_eq!(
            update_match(&[Rating::default()], &[1, 2], 0.5),
            Err(RatingError::LengthMismatch {
                ratings: 1,
                placements: 2
            })
        );
        let many = vec![Rating::default(); MAX_MATCH_PLAYERS + 1];
        let places = vec![1; MAX_MATCH_PLAYERS + 1];
        assert!(matches!(
            update_match(&many, &places, 0.5),
            Err(RatingError::TooManyPlayers { .. })
        ));
        assert_eq!(update_match(&[], &[], 0.5), Ok(vec![]));
    }

    #[test]
    fn certain_results_count_as_no_games() {
        let player = Rating::new(1e300, 100.0, 0.06);
        let opp = Rating::new(-1e300, 100.0, 0.06);
        let r = update(player, &[(opp, Outcome::Win)], 0.5);
        assert_eq!(r, update(player, &[], 0.5));
    }

    fn any_rating() -> impl Strategy<Value = Rating> {
        (any::<f64>(), any::<f64>(), any::<f64>()).prop_map(|(r, d, v)| Rating::new(r, d, v))
    }

    fn sane_rating() -> impl Strategy<Value = Rating> {
        (0.0..3000.0f64, 30.0..350.0f64, 0.03..0.1f64).prop_map(|(r, d, v)| Rating::new(r, d, v))
    }

    fn any_outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Win),
            Just(Outcome::Draw),
            Just(Outcome::Loss),
            any::<f64>().prop_map(Outcome::Score),
        ]
    }

    proptest! {
        #[test]
        fn any_input_gives_a_valid_rating(
            player in any_rating(),
            games in proptest::collection::vec((any_rating(), any_outcome()), 0..8),
            tau in any::<f64>(),
        ) {
            let r = update(player, &games, tau);
            prop_assert!(r.is_valid(), "{r:?}");
            prop_assert!((MIN_DEVIATION..=DEFAULT_DEVIATION).contains(&r.deviation));
            prop_assert!(r.volatility >= MIN_VOLATILITY);
        }

        #[test]
        fn winning_never_lowers_and_losing_never_raises(
            player in sane_rating(),
            opponents in proptest::collection::vec(sane_rating(), 1..6),
        ) {
            let wins: Vec<_> = opponents.iter().map(|&o| (o, Outcome::Win)).collect();
            let losses: Vec<_> = opponents.iter().map(|&o| (o, Outcome::Loss)).collect();
            prop_assert!(update(player, &wins, 0.5).rating >= player.rating);
            prop_assert!(update(player, &losses, 0.5).rating <= player.rating);
        }

        #[test]
        fn an_expected_draw_changes_nothing_but_certainty(player in sane_rating(), n in 1..6usize) {
            let games = vec![(player, Outcome::Draw); n];
            let r = update(player, &games, 0.5);
            prop_assert!((r.rating - player.rating).abs() < 1e-9);
            prop_assert!(r.deviation < update(player, &[], 0.5).deviation);
            prop_assert!(r.volatility <= player.volatility + 1e-12);
        }
    }
}
