//! The double-entry ledger: every change of a balance is a transfer between two ledger accounts,
//! in one currency, of a positive integer amount.
//!
//! - **Bounds, not wrapping.** Each ledger account has `min_balance` and `max_balance`. A debit
//!   applies only `WHERE balance >= min_balance + amount`, a credit only
//!   `WHERE balance <= max_balance - amount`; neither expression can overflow (amounts are
//!   1..=i64::MAX and bounds are within i64), so a transfer that would leave a bound is refused,
//!   never wrapped. Player wallets have `min_balance = 0`; the system's `mint` account may go
//!   negative, and it is where new money comes from, so the sum of all balances in a currency is
//!   always zero.
//! - **Idempotency.** Transfer ids are chosen by the caller and scoped to it (the stored id is
//!   `<scope>:<id>`). The transfer row is inserted *before* balances move, in the same
//!   transaction, so a second attempt with the same id collides on the primary key: it is rolled
//!   back and answered with the first result if every field matches, and refused as
//!   `id_reused` if not.
//! - **Linked chains.** A chain of transfers commits or rolls back as one transaction. A purchase,
//!   a bonus redemption and a trade are chains. Bounds hold for the chain's net effect on each
//!   account, which is applied in ascending account order (so chains never deadlock each other).
//! - **Unique items** have one owner row; a transfer that carries an `item_id` moves it with a
//!   conditional `UPDATE ... WHERE owner_id = <sender>` in the same transaction, and also moves one
//!   unit of the item type's ledger currency, so item supply is audited like money.
//! - On PostgreSQL a serialization failure or a deadlock (possible only through lock orders this
//!   module does not control) aborts the transaction; it is retried (up to 8 times) as a whole.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{now_ms, AccountId, ErrorKind, Platform, PlatformError};

pub use volley_proto::api::{
    AccountRef, Balance, ChainResult, TransferPage, TransferRecord, SYSTEM,
};

/// One transfer request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The caller's id for it (1-64 printable characters), unique within the caller's scope.
    pub id: String,
    /// Money leaves this account.
    pub debit: AccountRef,
    /// Money arrives here.
    pub credit: AccountRef,
    /// The currency (or `item:<type>` for items), 1-32 characters of `[a-z0-9:_-]`.
    pub currency: String,
    /// 1..=i64::MAX.
    pub amount: u64,
    /// What it is: `gift`, `grant`, `purchase`, `bonus`, `trade`, `craft`...
    pub kind: String,
    /// A unique item moved with it (then `currency` must be `item:<its type>` and amount 1).
    pub item_id: Option<String>,
}

/// What the audit found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditReport {
    /// Ledger accounts checked.
    pub accounts: u64,
    /// Transfers replayed.
    pub transfers: u64,
    /// Currencies whose balances do not sum to zero, with the sum.
    pub unbalanced_currencies: Vec<(String, i128)>,
    /// Accounts outside their bounds.
    pub out_of_bounds: Vec<i64>,
    /// Accounts whose balance differs from the sum of their transfers.
    pub mismatched: Vec<i64>,
    /// Unique items whose owner differs from what their transfers say, or whose type's
    /// balance does not count them.
    pub bad_items: Vec<String>,
    /// Transfers whose currency differs from an account's, or with a non-positive amount.
    pub bad_transfers: Vec<String>,
}

impl AuditReport {
    /// Whether every invariant holds.
    pub fn ok(&self) -> bool {
        self.unbalanced_currencies.is_empty()
            && self.out_of_bounds.is_empty()
            && self.mismatched.is_empty()
            && self.bad_items.is_empty()
            && self.bad_transfers.is_empty()
    }
}

fn check_currency(c: &str) -> Result<(), PlatformError> {
    let ok = (1..=48).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PlatformError::bad(
            "bad_currency",
            "currency must be 1-48 characters of [a-z0-9:_-]",
        ))
    }
}

fn check_id(id: &str) -> Result<(), PlatformError> {
    if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(PlatformError::bad(
            "bad_transfer_id",
            "transfer id must be 1-64 printable ASCII characters",
        ))
    }
}

fn amount_i64(a: u64) -> Result<i64, PlatformError> {
    match i64::try_from(a) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(PlatformError::bad(
            "bad_amount",
            format!("amount must be 1..={}", i64::MAX),
        )),
    }
}

/// Whether a database error means "try the whole transaction again" (deadlock, serialization).
fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(d.code().as_deref(), Some("40P01") | Some("40001")),
        _ => false,
    }
}

/// Bounds of a new ledger account: the system may go negative; wallets and everything else may
/// not.
fn default_bounds(r: &AccountRef) -> (i64, i64) {
    if r.owner == SYSTEM && r.name == "mint" {
        (i64::MIN, i64::MAX)
    } else {
        (0, i64::MAX)
    }
}

enum Attempt {
    Done(ChainResult),
    Collided,
}

impl Platform {
    /// The id of ledger account `r` in `currency`, creating it with `bounds` (or the defaults).
    pub async fn ledger_account(
        &self,
        r: &AccountRef,
        currency: &str,
        bounds: Option<(i64, i64)>,
    ) -> Result<i64, PlatformError> {
        check_currency(currency)?;
        let find = || {
            sqlx::query(
                "SELECT id FROM ledger_accounts WHERE owner_id = $1 AND name = $2 AND currency = $3",
            )
            .bind(r.owner as i64)
            .bind(&r.name)
            .bind(currency)
        };
        if let Some(row) = find().fetch_optional(self.db().reader()).await? {
            return Ok(row.try_get("id")?);
        }
        let (min, max) = bounds.unwrap_or_else(|| default_bounds(r));
        sqlx::query(
            "INSERT INTO ledger_accounts (owner_id, name, currency, balance, min_balance, max_balance, created_ms) \
             VALUES ($1, $2, $3, 0, $4, $5, $6) ON CONFLICT (owner_id, name, currency) DO NOTHING",
        )
        .bind(r.owner as i64)
        .bind(&r.name)
        .bind(currency)
        .bind(min)
        .bind(max)
        .bind(now_ms())
        .execute(self.db().writer())
        .await?;
        let row = find().fetch_one(self.db().writer()).await?;
        Ok(row.try_get("id")?)
    }

    /// Applies `chain` (all or nothing) under `scope` (the caller: a player id, or `sys`).
    pub async fn transfer_chain(
        &self,
        scope: &str,
        chain: &[Transfer],
    ) -> Result<ChainResult, PlatformError> {
        if chain.is_empty() || chain.len() > 16 {
            return Err(PlatformError::bad(
                "bad_chain",
                "a chain holds 1-16 transfers",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut prepared = Vec::with_capacity(chain.len());
        for t in chain {
            check_id(&t.id)?;
            check_currency(&t.currency)?;
            let amount = amount_i64(t.amount)?;
            if t.debit == t.credit {
                return Err(PlatformError::bad(
                    "same_account",
                    "debit and credit are the same account",
                ));
            }
            if t.kind.is_empty() || t.kind.len() > 32 {
                return Err(PlatformError::bad(
                    "bad_kind",
                    "kind must be 1-32 characters",
                ));
            }
            if let Some(item) = &t.item_id {
                check_id(item)?;
                if amount != 1 || !t.currency.starts_with("item:") {
                    return Err(PlatformError::bad(
                        "bad_item_transfer",
                        "a unique item moves as 1 unit of item:<type>",
                    ));
                }
            } else if let Some(item_type) = t.currency.strip_prefix("item:") {
                // Units of a unique item's type travel only with the item: moved alone they
                // would part a wallet's count from the items it owns.
                if self.is_unique_item_type(item_type).await? {
                    return Err(PlatformError::bad(
                        "bad_item_transfer",
                        "item:<type> of a unique item moves only with the item: name it in item_id",
                    ));
                }
            }
            let id = format!("{scope}:{}", t.id);
            if !seen.insert(id.clone()) {
                return Err(PlatformError::bad(
                    "bad_chain",
                    "a chain repeats a transfer id",
                ));
            }
            let debit = self.ledger_account(&t.debit, &t.currency, None).await?;
            let credit = self.ledger_account(&t.credit, &t.currency, None).await?;
            prepared.push((id, debit, credit, amount, t));
        }
        let chain_id = prepared.first().map(|p| p.0.clone()).unwrap_or_default();
        for attempt in 0..8 {
            match self.try_chain(&chain_id, &prepared).await {
                Ok(Attempt::Done(r)) => return Ok(r),
                Ok(Attempt::Collided) => return self.replay(&prepared).await,
                Err(e) if retryable(&e) && attempt < 7 => continue,
                Err(e) => return Err(map_chain_error(&e).unwrap_or_else(|| e.into())),
            }
        }
        Err(PlatformError::new(
            ErrorKind::Overloaded,
            "contention",
            "too much contention; retry",
        ))
    }

    async fn try_chain(
        &self,
        chain_id: &str,
        prepared: &[(String, i64, i64, i64, &Transfer)],
    ) -> Result<Attempt, sqlx::Error> {
        let now = now_ms();
        let mut tx = self.db().writer().begin().await?;
        let mut records = Vec::new();
        for (id, debit, credit, amount, t) in prepared {
            let ins = sqlx::query(
                "INSERT INTO ledger_transfers (id, chain, debit_account, credit_account, currency, amount, kind, item_id, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING seq",
            )
            .bind(id)
            .bind(chain_id)
            .bind(*debit)
            .bind(*credit)
            .bind(&t.currency)
            .bind(*amount)
            .bind(&t.kind)
            .bind(&t.item_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await;
            let seq: i64 = match ins {
                Ok(r) => r.try_get("seq")?,
                Err(e) if volley_store::schema::is_unique_violation(&e) => {
                    return Ok(Attempt::Collided);
                }
                Err(e) => return Err(e),
            };
            records.push(TransferRecord {
                seq,
                id: id.clone(),
                chain: chain_id.to_owned(),
                debit: t.debit.clone(),
                credit: t.credit.clone(),
                currency: t.currency.clone(),
                amount: t.amount,
                kind: t.kind.clone(),
                item_id: t.item_id.clone(),
                created_ms: now,
            });
        }
        // Net effect per ledger account, applied in ascending account order: every chain takes
        // its row locks in the same order, so two chains can never wait on each other in a cycle.
        let mut net: std::collections::BTreeMap<i64, i128> = std::collections::BTreeMap::new();
        for (_, debit, credit, amount, _) in prepared {
            *net.entry(*debit).or_default() -= i128::from(*amount);
            *net.entry(*credit).or_default() += i128::from(*amount);
        }
        for (account, delta) in net {
            if delta == 0 {
                continue;
            }
            let Ok(x) = i64::try_from(delta.unsigned_abs()) else {
                return Err(sqlx::Error::Protocol(format!(
                    "volley:over_limit:account {account}"
                )));
            };
            let (sql, what) = if delta < 0 {
                (
                    "UPDATE ledger_accounts SET balance = balance - $1 WHERE id = $2 AND balance >= min_balance + $1",
                    "insufficient_funds",
                )
            } else {
                (
                    "UPDATE ledger_accounts SET balance = balance + $1 WHERE id = $2 AND balance <= max_balance - $1",
                    "over_limit",
                )
            };
            let r = sqlx::query(sql)
                .bind(x)
                .bind(account)
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() == 0 {
                return Err(sqlx::Error::Protocol(format!(
                    "volley:{what}:account {account}"
                )));
            }
        }
        let mut moves: Vec<&Transfer> = prepared
            .iter()
            .map(|p| p.4)
            .filter(|t| t.item_id.is_some())
            .collect();
        moves.sort_by(|a, b| a.item_id.cmp(&b.item_id));
        for t in moves {
            let Some(item) = &t.item_id else { continue };
            let item_type = t.currency.trim_start_matches("item:");
            let m = sqlx::query(
                "UPDATE items SET owner_id = $1 WHERE id = $2 AND owner_id = $3 AND item_type = $4",
            )
            .bind(t.credit.owner as i64)
            .bind(item)
            .bind(t.debit.owner as i64)
            .bind(item_type)
            .execute(&mut *tx)
            .await?;
            if m.rows_affected() == 0 {
                return Err(sqlx::Error::Protocol(format!("volley:not_owner:{}", t.id)));
            }
        }
        tx.commit().await?;
        Ok(Attempt::Done(ChainResult {
            transfers: records,
            replayed: false,
        }))
    }

    /// Answers a retry: every transfer of the chain must exist with the same fields.
    async fn replay(
        &self,
        prepared: &[(String, i64, i64, i64, &Transfer)],
    ) -> Result<ChainResult, PlatformError> {
        let mut records = Vec::new();
        for (id, debit, credit, amount, t) in prepared {
            let row = sqlx::query(
                "SELECT seq, chain, debit_account, credit_account, currency, amount, kind, item_id, created_ms \
                 FROM ledger_transfers WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(self.db().writer())
            .await?;
            let Some(r) = row else {
                return Err(PlatformError::conflict(
                    "id_reused",
                    "some transfers of this chain exist and others do not; use new ids",
                ));
            };
            let same = r.try_get::<i64, _>("debit_account")? == *debit
                && r.try_get::<i64, _>("credit_account")? == *credit
                && r.try_get::<String, _>("currency")? == t.currency
                && r.try_get::<i64, _>("amount")? == *amount
                && r.try_get::<String, _>("kind")? == t.kind
                && r.try_get::<Option<String>, _>("item_id")? == t.item_id;
            if !same {
                return Err(PlatformError::conflict(
                    "id_reused",
                    format!("transfer id {:?} was used for a different transfer", t.id),
                ));
            }
            records.push(TransferRecord {
                seq: r.try_get("seq")?,
                id: id.clone(),
                chain: r.try_get("chain")?,
                debit: t.debit.clone(),
                credit: t.credit.clone(),
                currency: t.currency.clone(),
                amount: t.amount,
                kind: t.kind.clone(),
                item_id: t.item_id.clone(),
                created_ms: r.try_get("created_ms")?,
            });
        }
        let chains: std::collections::HashSet<&str> =
            records.iter().map(|r| r.chain.as_str()).collect();
        if chains.len() != 1 {
            return Err(PlatformError::conflict(
                "id_reused",
                "these transfer ids belong to different chains",
            ));
        }
        Ok(ChainResult {
            transfers: records,
            replayed: true,
        })
    }

    /// Balances of `owner`'s ledger accounts.
    pub async fn balances(&self, owner: AccountId) -> Result<Vec<Balance>, PlatformError> {
        let rows = sqlx::query(
            "SELECT name, currency, balance FROM ledger_accounts WHERE owner_id = $1 ORDER BY name, currency",
        )
        .bind(owner as i64)
        .fetch_all(self.db().reader())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Balance {
                    name: r.try_get("name")?,
                    currency: r.try_get("currency")?,
                    balance: r.try_get("balance")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// One balance (0 if the account does not exist).
    pub async fn balance(&self, r: &AccountRef, currency: &str) -> Result<i64, PlatformError> {
        let row = sqlx::query(
            "SELECT balance FROM ledger_accounts WHERE owner_id = $1 AND name = $2 AND currency = $3",
        )
        .bind(r.owner as i64)
        .bind(&r.name)
        .bind(currency)
        .fetch_optional(self.db().reader())
        .await?;
        Ok(match row {
            Some(r) => r.try_get("balance")?,
            None => 0,
        })
    }

    /// `owner`'s transfers, newest first, with `seq < before`, at most `limit` (<= 100).
    pub async fn ledger_history(
        &self,
        owner: AccountId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<TransferRecord>, PlatformError> {
        self.history_rows(owner, before, limit.clamp(1, 100)).await
    }

    /// A page of `owner`'s transfers, newest first, with `seq < before`: at most `limit`
    /// (<= 100), and the cursor of the next page when there is one.
    pub async fn ledger_page(
        &self,
        owner: AccountId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<TransferPage, PlatformError> {
        let limit = limit.clamp(1, 100);
        let mut transfers = self.history_rows(owner, before, limit + 1).await?;
        let next_before = if transfers.len() > limit {
            transfers.truncate(limit);
            transfers.last().map(|t| t.seq)
        } else {
            None
        };
        Ok(TransferPage {
            transfers,
            next_before,
        })
    }

    async fn history_rows(
        &self,
        owner: AccountId,
        before: Option<i64>,
        rows: usize,
    ) -> Result<Vec<TransferRecord>, PlatformError> {
        let rows = sqlx::query(
            "SELECT t.seq, t.id, t.chain, t.currency, t.amount, t.kind, t.item_id, t.created_ms, \
             d.owner_id AS d_owner, d.name AS d_name, c.owner_id AS c_owner, c.name AS c_name \
             FROM ledger_transfers t JOIN ledger_accounts d ON d.id = t.debit_account \
             JOIN ledger_accounts c ON c.id = t.credit_account \
             WHERE (d.owner_id = $1 OR c.owner_id = $1) AND t.seq < $2 ORDER BY t.seq DESC LIMIT $3",
        )
        .bind(owner as i64)
        .bind(before.unwrap_or(i64::MAX))
        .bind(rows as i64)
        .fetch_all(self.db().reader())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(TransferRecord {
                    seq: r.try_get("seq")?,
                    id: r.try_get("id")?,
                    chain: r.try_get("chain")?,
                    debit: AccountRef {
                        owner: r.try_get::<i64, _>("d_owner")? as AccountId,
                        name: r.try_get("d_name")?,
                    },
                    credit: AccountRef {
                        owner: r.try_get::<i64, _>("c_owner")? as AccountId,
                        name: r.try_get("c_name")?,
                    },
                    currency: r.try_get("currency")?,
                    amount: r.try_get::<i64, _>("amount")?.max(0) as u64,
                    kind: r.try_get("kind")?,
                    item_id: r.try_get("item_id")?,
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Whether a transfer with the scoped id exists.
    pub async fn transfer_exists(&self, scoped_id: &str) -> Result<bool, PlatformError> {
        Ok(
            sqlx::query("SELECT seq FROM ledger_transfers WHERE id = $1")
                .bind(scoped_id)
                .fetch_optional(self.db().reader())
                .await?
                .is_some(),
        )
    }

    /// Whether items of `item_type` are unique (rows of their own) rather than stackable units.
    async fn is_unique_item_type(&self, item_type: &str) -> Result<bool, PlatformError> {
        Ok(
            sqlx::query("SELECT 1 FROM items WHERE item_type = $1 LIMIT 1")
                .bind(item_type)
                .fetch_optional(self.db().reader())
                .await?
                .is_some(),
        )
    }

    /// Mints a unique item of `item_type` for `owner` (its supply moves with it: one unit of
    /// `item:<type>` from the mint).
    pub async fn mint_item(
        &self,
        scope: &str,
        transfer_id: &str,
        owner: AccountId,
        item_type: &str,
    ) -> Result<String, PlatformError> {
        let currency = format!("item:{item_type}");
        check_currency(&currency)?;
        let item_id = format!("{item_type}-{}", crate::random_id());
        // The item is created owned by the system, then moved to the owner in the chain, so a
        // retry that collides leaves an orphan system-owned row at most, never a second item.
        let scoped = format!("{scope}:{transfer_id}");
        if let Some(r) = sqlx::query("SELECT item_id FROM ledger_transfers WHERE id = $1")
            .bind(&scoped)
            .fetch_optional(self.db().reader())
            .await?
        {
            return r.try_get::<Option<String>, _>("item_id")?.ok_or_else(|| {
                PlatformError::conflict("id_reused", "that id is not an item mint")
            });
        }
        sqlx::query(
            "INSERT INTO items (id, item_type, owner_id, created_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&item_id)
        .bind(item_type)
        .bind(SYSTEM as i64)
        .bind(now_ms())
        .execute(self.db().writer())
        .await?;
        let res = self
            .transfer_chain(
                scope,
                &[Transfer {
                    id: transfer_id.to_owned(),
                    debit: AccountRef::mint(),
                    credit: AccountRef::wallet(owner),
                    currency,
                    amount: 1,
                    kind: "mint".into(),
                    item_id: Some(item_id.clone()),
                }],
            )
            .await?;
        let stored = res
            .transfers
            .first()
            .and_then(|t| t.item_id.clone())
            .unwrap_or(item_id.clone());
        if stored != item_id {
            // A concurrent retry won; drop the unused row.
            sqlx::query("DELETE FROM items WHERE id = $1 AND owner_id = 0")
                .bind(&item_id)
                .execute(self.db().writer())
                .await?;
        }
        Ok(stored)
    }

    /// Unique items `owner` holds, as (id, type).
    pub async fn items_of(&self, owner: AccountId) -> Result<Vec<(String, String)>, PlatformError> {
        let rows = sqlx::query("SELECT id, item_type FROM items WHERE owner_id = $1 ORDER BY id")
            .bind(owner as i64)
            .fetch_all(self.db().reader())
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("item_type")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Checks every ledger invariant over the whole database.
    pub async fn audit(&self) -> Result<AuditReport, PlatformError> {
        let mut rep = AuditReport::default();
        let accounts = sqlx::query(
            "SELECT id, currency, balance, min_balance, max_balance FROM ledger_accounts",
        )
        .fetch_all(self.db().reader())
        .await?;
        let mut sums: std::collections::BTreeMap<String, i128> = Default::default();
        let mut expected: std::collections::HashMap<i64, (i128, String)> = Default::default();
        let mut actual: std::collections::HashMap<i64, i64> = Default::default();
        for a in &accounts {
            let id: i64 = a.try_get("id")?;
            let cur: String = a.try_get("currency")?;
            let bal: i64 = a.try_get("balance")?;
            let (min, max): (i64, i64) = (a.try_get("min_balance")?, a.try_get("max_balance")?);
            *sums.entry(cur.clone()).or_default() += i128::from(bal);
            if bal < min || bal > max {
                rep.out_of_bounds.push(id);
            }
            expected.insert(id, (0, cur));
            actual.insert(id, bal);
        }
        rep.accounts = accounts.len() as u64;
        rep.unbalanced_currencies = sums.into_iter().filter(|(_, s)| *s != 0).collect();
        let transfers = sqlx::query(
            "SELECT id, debit_account, credit_account, currency, amount FROM ledger_transfers",
        )
        .fetch_all(self.db().reader())
        .await?;
        rep.transfers = transfers.len() as u64;
        for t in &transfers {
            let id: String = t.try_get("id")?;
            let (d, c): (i64, i64) = (t.try_get("debit_account")?, t.try_get("credit_account")?);
            let cur: String = t.try_get("currency")?;
            let amount: i64 = t.try_get("amount")?;
            let ok_cur = expected.get(&d).is_some_and(|e| e.1 == cur)
                && expected.get(&c).is_some_and(|e| e.1 == cur);
            if amount <= 0 || !ok_cur {
                rep.bad_transfers.push(id);
                continue;
            }
            if let Some(e) = expected.get_mut(&d) {
                e.0 -= i128::from(amount);
            }
            if let Some(e) = expected.get_mut(&c) {
                e.0 += i128::from(amount);
            }
        }
        for (id, (e, _)) in &expected {
            if actual.get(id).map(|a| i128::from(*a)) != Some(*e) {
                rep.mismatched.push(*id);
            }
        }
        rep.mismatched.sort_unstable();
        // Unique items: the last transfer carrying each item names its owner.
        let items = sqlx::query(
            "SELECT i.id, i.owner_id, \
             (SELECT c.owner_id FROM ledger_transfers t JOIN ledger_accounts c ON c.id = t.credit_account \
              WHERE t.item_id = i.id ORDER BY t.seq DESC LIMIT 1) AS last_owner FROM items i",
        )
        .fetch_all(self.db().reader())
        .await?;
        for i in items {
            let id: String = i.try_get("id")?;
            let owner: i64 = i.try_get("owner_id")?;
            let last: Option<i64> = i.try_get("last_owner")?;
            match last {
                Some(l) if l == owner => {}
                // Created but never minted (an interrupted mint): held by the system.
                None if owner == SYSTEM as i64 => {}
                _ => rep.bad_items.push(id),
            }
        }
        Ok(rep)
    }
}

/// Turns the protocol errors a failed chain raised into service errors.
pub(crate) fn map_chain_error(e: &sqlx::Error) -> Option<PlatformError> {
    let sqlx::Error::Protocol(m) = e else {
        return None;
    };
    let rest = m.strip_prefix("volley:")?;
    let (what, id) = rest.split_once(':')?;
    // Ledger account ids are internal: they are logged, never shown.
    tracing::debug!(refused = what, at = id, "transfer chain refused");
    Some(match what {
        "insufficient_funds" => PlatformError::conflict(
            "insufficient_funds",
            "not enough funds: this would take a balance below what it may hold",
        ),
        "over_limit" => PlatformError::conflict(
            "over_limit",
            "this would take a balance above what it may hold",
        ),
        _ => PlatformError::conflict(
            "not_owner",
            format!("transfer {id:?}: the sender does not own that item"),
        ),
    })
}
