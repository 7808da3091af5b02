//! Economy on top of the ledger: grants (match rewards), gifts between players, bonus codes with
//! a fraud score that can hold a redemption for review, and unique-item trades.
//!
//! A bonus code's global limit is a ledger balance: creating the code moves `global_limit` uses
//! (currency `uses:<code>`) from the mint into the system account `bonus-pool:<code>`, whose
//! lower bound is 0. A redemption is one chain: one use from the pool into the player's
//! `bonus-used` account (upper bound: the per-player limit), and the reward from the mint into
//! the player's wallet. The bounds make over-redemption impossible under any concurrency: the
//! 101st redemption of a 100-use code finds the pool at 0 and rolls back whole.

use std::net::IpAddr;

use sqlx::Row;

use crate::ledger::{AccountRef, ChainResult, Transfer, SYSTEM};

use crate::{now_ms, AccountId, ErrorKind, Platform, PlatformError};
pub use volley_proto::api::{BonusCode, Gift, HeldPage, HeldTransfer, Redemption, StoreItem};

/// Where a request came from, as far as fraud scoring is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The client's address.
    pub address: Option<IpAddr>,
    /// The device the client reports (the SDK's device id; stored only as a hash).
    pub device: Option<String>,
}

impl Origin {
    /// An origin known by address only.
    pub fn address(addr: IpAddr) -> Origin {
        Origin {
            address: Some(addr),
            device: None,
        }
    }

    /// The address and the device.
    pub fn new(address: Option<IpAddr>, device: Option<&str>) -> Origin {
        Origin {
            address,
            device: device.filter(|d| !d.is_empty()).map(str::to_owned),
        }
    }

    fn device_key(&self) -> String {
        self.device
            .as_deref()
            .map(crate::token_hash)
            .unwrap_or_default()
    }
}

/// Fraud scoring thresholds.
#[derive(Debug, Clone, Copy)]
pub struct FraudRules {
    /// Redemptions or gifts by one account in a minute above which it scores.
    pub velocity_per_min: i64,
    /// Distinct accounts redeeming from one address in an hour above which they score.
    pub accounts_per_address: i64,
    /// Distinct accounts redeeming from one device in a day above which they score.
    pub accounts_per_device: i64,
    /// Score at or above which a transfer is held.
    pub hold_at: f64,
}

impl Default for FraudRules {
    fn default() -> Self {
        FraudRules {
            velocity_per_min: 10,
            accounts_per_address: 3,
            accounts_per_device: 2,
            hold_at: 0.5,
        }
    }
}

fn check_code(code: &str) -> Result<(), PlatformError> {
    if (3..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(())
    } else {
        Err(PlatformError::bad(
            "bad_code",
            "a code is 3-32 characters of [A-Z0-9-]",
        ))
    }
}

impl Platform {
    /// Gives `amount` of `currency` from the mint to `player` (match rewards, purchases settled
    /// elsewhere, compensation). `id` makes it idempotent.
    pub async fn grant(
        &self,
        id: &str,
        player: AccountId,
        currency: &str,
        amount: u64,
        kind: &str,
    ) -> Result<ChainResult, PlatformError> {
        if !self.is_active(player).await? {
            return Err(PlatformError::not_found("player"));
        }
        self.transfer_chain(
            "sys",
            &[Transfer {
                id: id.to_owned(),
                debit: AccountRef::mint(),
                credit: AccountRef::wallet(player),
                currency: currency.to_owned(),
                amount,
                kind: kind.to_owned(),
                item_id: None,
            }],
        )
        .await
    }

    /// A gift from `from`'s wallet to another player's (a unique item too, with `item_id`).
    pub async fn gift(
        &self,
        from: AccountId,
        g: &Gift,
        origin: &Origin,
    ) -> Result<ChainResult, PlatformError> {
        let (id, to, currency, amount, item_id) = (
            g.id.as_str(),
            g.to,
            g.currency.as_str(),
            g.amount,
            g.item_id.clone(),
        );
        if from == to {
            return Err(PlatformError::bad(
                "same_account",
                "a gift needs another player",
            ));
        }
        if !self.is_active(to).await? {
            return Err(PlatformError::not_found("player"));
        }
        let out = self
            .transfer_chain(
                &from.to_string(),
                &[Transfer {
                    id: id.to_owned(),
                    debit: AccountRef::wallet(from),
                    credit: AccountRef::wallet(to),
                    currency: currency.to_owned(),
                    amount,
                    kind: if item_id.is_some() { "trade" } else { "gift" }.into(),
                    item_id,
                }],
            )
            .await?;
        if !out.replayed {
            self.fraud_event(from, origin, "gift").await?;
        }
        Ok(out)
    }

    /// Creates a bonus code and funds its pool.
    pub async fn create_bonus_code(&self, def: &BonusCode) -> Result<(), PlatformError> {
        check_code(&def.code)?;
        if def.global_limit == 0 || def.per_player_limit == 0 || def.amount == 0 {
            return Err(PlatformError::bad(
                "bad_limits",
                "amount, global_limit and per_player_limit must be positive",
            ));
        }
        let per_player = i64::try_from(def.per_player_limit)
            .map_err(|_| PlatformError::bad("bad_limits", "per_player_limit too large"))?;
        let r = sqlx::query(
            "INSERT INTO bonus_codes (code, currency, amount, global_limit, per_player_limit, expires_ms, min_account_age_ms, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&def.code)
        .bind(&def.currency)
        .bind(i64::try_from(def.amount).map_err(|_| PlatformError::bad("bad_amount", "amount too large"))?)
        .bind(i64::try_from(def.global_limit).map_err(|_| PlatformError::bad("bad_limits", "global_limit too large"))?)
        .bind(per_player)
        .bind(def.expires_ms)
        .bind(def.min_account_age_ms.max(0))
        .bind(now_ms())
        .execute(self.db().writer())
        .await;
        match r {
            Ok(_) => {}
            Err(e) if volley_store::schema::is_unique_violation(&e) => {
                return Err(PlatformError::conflict("code_exists", "that code exists"));
            }
            Err(e) => return Err(e.into()),
        }
        let uses = format!("uses:{}", def.code.to_ascii_lowercase());
        self.transfer_chain(
            "sys",
            &[Transfer {
                id: format!("bonus-fund:{}", def.code),
                debit: AccountRef::mint(),
                credit: AccountRef::system(&format!("bonus-pool:{}", def.code)),
                currency: uses,
                amount: def.global_limit,
                kind: "bonus-fund".into(),
                item_id: None,
            }],
        )
        .await?;
        Ok(())
    }

    async fn fraud_event(
        &self,
        account: AccountId,
        origin: &Origin,
        kind: &str,
    ) -> Result<(), PlatformError> {
        sqlx::query(
            "INSERT INTO fraud_events (account_id, address, device, kind, created_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(account as i64)
        .bind(origin.address.map(|a| a.to_string()).unwrap_or_default())
        .bind(origin.device_key())
        .bind(kind)
        .bind(now_ms())
        .execute(self.db().writer())
        .await?;
        Ok(())
    }

    /// The fraud score of a new transfer by `account` from `origin`, with its reasons.
    pub async fn fraud_score(
        &self,
        account: AccountId,
        origin: &Origin,
        rules: &FraudRules,
    ) -> Result<(f64, Vec<String>), PlatformError> {
        let now = now_ms();
        let mut score: f64 = 0.0;
        let mut reasons = Vec::new();
        let recent: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM fraud_events WHERE account_id = $1 AND created_ms > $2",
        )
        .bind(account as i64)
        .bind(now - 60_000)
        .fetch_one(self.db().reader())
        .await?
        .try_get("n")?;
        if recent >= rules.velocity_per_min {
            score += 0.5;
            reasons.push(format!("velocity: {recent} transfers in the last minute"));
        }
        if let Some(addr) = origin.address {
            let others: i64 = sqlx::query(
                "SELECT COUNT(DISTINCT account_id) AS n FROM fraud_events \
                 WHERE address = $1 AND created_ms > $2 AND account_id <> $3",
            )
            .bind(addr.to_string())
            .bind(now - 3_600_000)
            .bind(account as i64)
            .fetch_one(self.db().reader())
            .await?
            .try_get("n")?;
            if others >= rules.accounts_per_address {
                score += 0.5;
                reasons.push(format!(
                    "shared address: {others} other accounts used it in the last hour"
                ));
            }
        }
        if origin.device.is_some() {
            let others: i64 = sqlx::query(
                "SELECT COUNT(DISTINCT account_id) AS n FROM fraud_events \
                 WHERE device = $1 AND created_ms > $2 AND account_id <> $3",
            )
            .bind(origin.device_key())
            .bind(now - 86_400_000)
            .bind(account as i64)
            .fetch_one(self.db().reader())
            .await?
            .try_get("n")?;
            if others >= rules.accounts_per_device {
                score += 0.5;
                reasons.push(format!(
                    "shared device: {others} other accounts used it in the last day"
                ));
            }
        }
        Ok((score.min(1.0), reasons))
    }

    /// Redeems `code` for `player`. `id` makes it idempotent; `origin` feeds the fraud score.
    pub async fn redeem(
        &self,
        player: AccountId,
        code: &str,
        id: &str,
        origin: &Origin,
        rules: &FraudRules,
    ) -> Result<Redemption, PlatformError> {
        check_code(code)?;
        let row = sqlx::query(
            "SELECT currency, amount, expires_ms, min_account_age_ms FROM bonus_codes WHERE code = $1",
        )
        .bind(code)
        .fetch_optional(self.db().reader())
        .await?
        .ok_or_else(|| PlatformError::not_found("code"))?;
        let currency: String = row.try_get("currency")?;
        let amount = row.try_get::<i64, _>("amount")?.max(0) as u64;
        let expires: i64 = row.try_get("expires_ms")?;
        let min_age: i64 = row.try_get("min_account_age_ms")?;
        let now = now_ms();
        if expires <= now {
            return Err(PlatformError::conflict(
                "code_expired",
                "this code has expired",
            ));
        }
        let created = self.account(player).await?.created_ms;
        if now - created < min_age {
            return Err(PlatformError::forbidden(
                "this account is too new for this code",
            ));
        }
        let chain = self.redemption_chain(player, code, id, &currency, amount)?;
        let per_player = self.prepare_redemption(player, code).await?;
        // A retry of an applied redemption answers at once, without scoring again.
        if self
            .transfer_exists(&format!("{player}:{}", chain[0].id))
            .await?
        {
            return Ok(Redemption::Redeemed {
                chain: self.transfer_chain(&player.to_string(), &chain).await?,
            });
        }
        // A redemption that cannot succeed is refused as such before any fraud scoring: a
        // player over the code's limit is told so, not held for review.
        let uses = format!("uses:{}", code.to_ascii_lowercase());
        let used = self.balance(&chain[0].credit, &uses).await?;
        if used >= per_player {
            return Err(PlatformError::conflict(
                "already_redeemed",
                "you have redeemed this code as often as it allows",
            ));
        }
        if self.balance(&chain[0].debit, &uses).await? <= 0 {
            return Err(PlatformError::conflict(
                "code_exhausted",
                "this code has no redemptions left",
            ));
        }
        let (score, reasons) = self.fraud_score(player, origin, rules).await?;
        self.fraud_event(player, origin, "redeem").await?;
        if score >= rules.hold_at {
            let body = serde_json::to_string(&chain)
                .map_err(|e| PlatformError::new(ErrorKind::Internal, "internal", e.to_string()))?;
            sqlx::query(
                "INSERT INTO held_transfers (id, account_id, body, score, reasons, state, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(format!("{player}:{id}"))
            .bind(player as i64)
            .bind(body)
            .bind(score)
            .bind(reasons.join("; "))
            .bind(now)
            .execute(self.db().writer())
            .await?;
            return Ok(Redemption::Held { score, reasons });
        }
        let res = self.transfer_chain(&player.to_string(), &chain).await;
        match res {
            Ok(chain) => Ok(Redemption::Redeemed { chain }),
            Err(e) if e.code == "insufficient_funds" => Err(PlatformError::conflict(
                "code_exhausted",
                "this code has no redemptions left",
            )),
            Err(e) if e.code == "over_limit" => Err(PlatformError::conflict(
                "already_redeemed",
                "you have redeemed this code as often as it allows",
            )),
            Err(e) => Err(e),
        }
    }

    fn redemption_chain(
        &self,
        player: AccountId,
        code: &str,
        id: &str,
        currency: &str,
        amount: u64,
    ) -> Result<Vec<Transfer>, PlatformError> {
        if id.len() > 40 {
            return Err(PlatformError::bad(
                "bad_transfer_id",
                "redemption id: at most 40 characters",
            ));
        }
        Ok(vec![
            Transfer {
                id: format!("{id}:use"),
                debit: AccountRef::system(&format!("bonus-pool:{code}")),
                credit: AccountRef {
                    owner: player,
                    name: "bonus-used".into(),
                },
                currency: format!("uses:{}", code.to_ascii_lowercase()),
                amount: 1,
                kind: "bonus-use".into(),
                item_id: None,
            },
            Transfer {
                id: format!("{id}:reward"),
                debit: AccountRef::mint(),
                credit: AccountRef::wallet(player),
                currency: currency.to_owned(),
                amount,
                kind: "bonus".into(),
                item_id: None,
            },
        ])
    }

    /// Before a player's first redemption of `code`, its used-count account gets the code's
    /// per-player limit as its upper bound. Returns that limit.
    pub(crate) async fn prepare_redemption(
        &self,
        player: AccountId,
        code: &str,
    ) -> Result<i64, PlatformError> {
        let row = sqlx::query("SELECT per_player_limit FROM bonus_codes WHERE code = $1")
            .bind(code)
            .fetch_optional(self.db().reader())
            .await?
            .ok_or_else(|| PlatformError::not_found("code"))?;
        let limit: i64 = row.try_get("per_player_limit")?;
        self.ledger_account(
            &AccountRef {
                owner: player,
                name: "bonus-used".into(),
            },
            &format!("uses:{}", code.to_ascii_lowercase()),
            Some((0, limit)),
        )
        .await?;
        Ok(limit)
    }

    /// The first 100 held transfers awaiting review: (id, player, score, reasons). See
    /// [`Platform::held_page`] for all of them.
    pub async fn held(&self) -> Result<Vec<(String, AccountId, f64, String)>, PlatformError> {
        Ok(self
            .held_page(None, 100)
            .await?
            .held
            .into_iter()
            .map(|h| (h.id, h.player_id, h.score, h.reasons))
            .collect())
    }

    /// Held transfers awaiting review, oldest first: at most `limit` (<= 100) after the cursor
    /// `after` (a previous page's `next_after`), and the next page's cursor when there is one.
    pub async fn held_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<HeldPage, PlatformError> {
        let limit = limit.clamp(1, 100);
        let (after_ms, after_id) = match after {
            None => (i64::MIN, String::new()),
            Some(c) => c
                .split_once(':')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(|| {
                    PlatformError::bad("bad_cursor", "after: pass a page's next_after as it is")
                })?,
        };
        let rows = sqlx::query(
            "SELECT id, account_id, score, reasons, created_ms FROM held_transfers \
             WHERE state = 0 AND (created_ms > $1 OR (created_ms = $1 AND id > $2)) \
             ORDER BY created_ms, id LIMIT $3",
        )
        .bind(after_ms)
        .bind(after_id)
        .bind(limit as i64 + 1)
        .fetch_all(self.db().reader())
        .await?;
        let mut held = rows
            .into_iter()
            .map(|r| {
                Ok(HeldTransfer {
                    id: r.try_get("id")?,
                    player_id: r.try_get::<i64, _>("account_id")? as AccountId,
                    score: r.try_get("score")?,
                    reasons: r.try_get("reasons")?,
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let next_after = if held.len() > limit {
            held.truncate(limit);
            held.last().map(|h| format!("{}:{}", h.created_ms, h.id))
        } else {
            None
        };
        Ok(HeldPage { held, next_after })
    }

    /// Approves (applies) or rejects a held transfer.
    pub async fn review(
        &self,
        held_id: &str,
        approve: bool,
    ) -> Result<Option<ChainResult>, PlatformError> {
        let row =
            sqlx::query("SELECT account_id, body FROM held_transfers WHERE id = $1 AND state = 0")
                .bind(held_id)
                .fetch_optional(self.db().reader())
                .await?
                .ok_or_else(|| PlatformError::not_found("held transfer"))?;
        let player = row.try_get::<i64, _>("account_id")? as AccountId;
        let body: String = row.try_get("body")?;
        let chain: Vec<Transfer> = serde_json::from_str(&body)
            .map_err(|e| PlatformError::new(ErrorKind::Internal, "internal", e.to_string()))?;
        let out = if approve {
            Some(self.transfer_chain(&player.to_string(), &chain).await?)
        } else {
            None
        };
        sqlx::query("UPDATE held_transfers SET state = $1 WHERE id = $2")
            .bind(if approve { 1i64 } else { 2 })
            .bind(held_id)
            .execute(self.db().writer())
            .await?;
        Ok(out)
    }

    /// Whether `owner` is the system (for callers that must not touch system accounts).
    pub fn is_system(owner: AccountId) -> bool {
        owner == SYSTEM
    }
}

impl Platform {
    /// Adds or replaces a catalogue entry.
    pub async fn put_store_item(&self, item: &StoreItem) -> Result<(), PlatformError> {
        let chk = |c: &str| {
            (1..=48).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_-".contains(&b))
        };
        if !chk(&item.sku) || !chk(&item.price_currency) || !chk(&item.gives_currency) {
            return Err(PlatformError::bad(
                "bad_store_item",
                "sku and currencies: 1-48 characters of [a-z0-9:_-]",
            ));
        }
        let price = i64::try_from(item.price).ok().filter(|p| *p > 0);
        let gives = i64::try_from(item.gives_amount).ok().filter(|g| *g > 0);
        let (Some(price), Some(gives)) = (price, gives) else {
            return Err(PlatformError::bad(
                "bad_amount",
                "price and gives_amount: 1..=i64::MAX",
            ));
        };
        if let Some(t) = &item.item_type {
            if item.gives_currency != format!("item:{t}") || gives != 1 {
                return Err(PlatformError::bad(
                    "bad_store_item",
                    "a unique item is given as 1 of item:<item_type>",
                ));
            }
        }
        sqlx::query(
            "INSERT INTO store_items (sku, price_currency, price, gives_currency, gives_amount, item_type, active, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7) ON CONFLICT (sku) DO UPDATE SET price_currency = $2, price = $3, \
             gives_currency = $4, gives_amount = $5, item_type = $6, active = 1",
        )
        .bind(&item.sku)
        .bind(&item.price_currency)
        .bind(price)
        .bind(&item.gives_currency)
        .bind(gives)
        .bind(&item.item_type)
        .bind(now_ms())
        .execute(self.db().writer())
        .await?;
        Ok(())
    }

    /// The active catalogue.
    pub async fn store_items(&self) -> Result<Vec<StoreItem>, PlatformError> {
        let rows = sqlx::query(
            "SELECT sku, price_currency, price, gives_currency, gives_amount, item_type FROM store_items \
             WHERE active = 1 ORDER BY sku LIMIT 1000",
        )
        .fetch_all(self.db().reader())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(StoreItem {
                    sku: r.try_get("sku")?,
                    price_currency: r.try_get("price_currency")?,
                    price: r.try_get::<i64, _>("price")?.max(0) as u64,
                    gives_currency: r.try_get("gives_currency")?,
                    gives_amount: r.try_get::<i64, _>("gives_amount")?.max(0) as u64,
                    item_type: r.try_get("item_type")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Buys `sku` for `player`: one chain that pays the store and hands over the goods, so a
    /// purchase is paid and delivered or neither. `id` makes it idempotent.
    pub async fn purchase(
        &self,
        player: AccountId,
        sku: &str,
        id: &str,
    ) -> Result<ChainResult, PlatformError> {
        if id.len() > 48 {
            return Err(PlatformError::bad(
                "bad_transfer_id",
                "purchase id: at most 48 characters",
            ));
        }
        let item = self
            .store_items()
            .await?
            .into_iter()
            .find(|i| i.sku == sku)
            .ok_or_else(|| PlatformError::not_found("store item"))?;
        // Pay the store, receive the goods from the mint (with the unique item, if any).
        let chain = |item_id: Option<String>| {
            [
                Transfer {
                    id: format!("{id}:pay"),
                    debit: AccountRef::wallet(player),
                    credit: AccountRef::system("store"),
                    currency: item.price_currency.clone(),
                    amount: item.price,
                    kind: "purchase".into(),
                    item_id: None,
                },
                Transfer {
                    id: format!("{id}:give"),
                    debit: AccountRef::mint(),
                    credit: AccountRef::wallet(player),
                    currency: item.gives_currency.clone(),
                    amount: item.gives_amount,
                    kind: "purchase".into(),
                    item_id,
                },
            ]
        };
        let scope = player.to_string();
        let delivered = format!("{scope}:{id}:give");
        // A retry of a delivered purchase answers with the first result.
        if self.transfer_exists(&format!("{scope}:{id}:pay")).await? {
            let stored = self.transfer_item(&delivered).await?;
            return self.transfer_chain(&scope, &chain(stored)).await;
        }
        let minted = match &item.item_type {
            Some(t) => {
                let item_id = format!("{t}-{}", crate::random_id());
                sqlx::query(
                    "INSERT INTO items (id, item_type, owner_id, created_ms) VALUES ($1, $2, $3, $4)",
                )
                .bind(&item_id)
                .bind(t)
                .bind(SYSTEM as i64)
                .bind(now_ms())
                .execute(self.db().writer())
                .await?;
                Some(item_id)
            }
            None => None,
        };
        let out = self.transfer_chain(&scope, &chain(minted.clone())).await;
        let keep = out.as_ref().ok().filter(|r| !r.replayed).is_some();
        if let (Some(item_id), false) = (&minted, keep) {
            // Not delivered (refused, or a concurrent retry delivered another): drop the
            // unused row, which the system still owns.
            sqlx::query("DELETE FROM items WHERE id = $1 AND owner_id = 0")
                .bind(item_id)
                .execute(self.db().writer())
                .await?;
            // A concurrent first attempt with the same id delivered its own item: answer
            // with that one.
            if matches!(&out, Err(e) if e.code == "id_reused") {
                if let Some(stored) = self.transfer_item(&delivered).await? {
                    return self.transfer_chain(&scope, &chain(Some(stored))).await;
                }
            }
        }
        out
    }

    async fn transfer_item(&self, scoped_id: &str) -> Result<Option<String>, PlatformError> {
        Ok(
            sqlx::query("SELECT item_id FROM ledger_transfers WHERE id = $1")
                .bind(scoped_id)
                .fetch_optional(self.db().reader())
                .await?
                .map(|r| r.try_get::<Option<String>, _>("item_id"))
                .transpose()?
                .flatten(),
        )
    }
}
