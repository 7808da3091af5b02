//! JSON bodies of the node's HTTP API (`/v1/...`), shared by the server and the SDK so the SDK
//! never links server code.

use serde::{Deserialize, Serialize};

/// `POST /v1/auth/device`: log in (or sign up) with a device id.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLogin {
    /// A stable id the game generated for this device; 8-128 printable ASCII characters.
    pub device_id: String,
}

/// A session, returned by every login and by refresh.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
pub struct Session {
    /// Opaque bearer token for `Authorization: Bearer ...`.
    pub token: String,
    /// The player's id.
    pub player_id: u64,
    /// Whether this login created the account.
    pub created: bool,
    /// Single-use token for `POST /v1/auth/refresh`; each use returns a new one.
    #[serde(default)]
    pub refresh_token: String,
    /// Milliseconds until `token` expires.
    #[serde(default)]
    pub expires_in_ms: u64,
}

/// `POST /v1/auth/email/register`.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailRegister {
    /// The address (case-insensitive).
    pub email: String,
    /// 8-128 characters.
    pub password: String,
    /// Shown to other players; defaults to `player-<id>`.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `POST /v1/auth/email`.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailLogin {
    /// The address.
    pub email: String,
    /// The password.
    pub password: String,
}

/// `POST /v1/auth/custom` (server key required): a studio's backend logs its player in.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomLogin {
    /// The studio's own id for the player, 1-128 printable ASCII characters.
    pub custom_id: String,
}

/// `POST /v1/auth/refresh` and `POST /v1/auth/logout`.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last [`Session`].
    pub refresh_token: String,
}

/// `POST /v1/account/link` and `/unlink`: attach or detach a login method.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// `device`, `email` or `custom` (custom needs the server key).
    pub kind: String,
    /// The device id, address or custom id.
    pub id: String,
    /// For `email` links: the password to set.
    #[serde(default)]
    pub password: Option<String>,
}

/// `GET /v1/account`.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
pub struct AccountInfo {
    /// The player's id.
    pub player_id: u64,
    /// Display name.
    pub display_name: String,
    /// `active`, `banned` or `deleted`.
    pub status: String,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Login methods attached, as `(kind, id)`; emails and custom ids shown, device ids too.
    pub links: Vec<(String, String)>,
}

/// One of a player's logins (a device or browser that signed in and keeps refreshing).
#[derive(Debug, Clone, PartialEq, Eq, schemars::JsonSchema, Serialize, Deserialize)]
pub struct LoginInfo {
    /// Its id, for `DELETE /v1/account/sessions/{id}`.
    pub id: String,
    /// When it signed in, Unix ms.
    pub created_ms: i64,
    /// When it last refreshed its session, Unix ms (0: never).
    pub last_refresh_ms: i64,
    /// Whether the caller's own session belongs to it.
    pub current: bool,
}

/// `GET /v1/account/sessions`: the caller's live logins, newest first.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
pub struct LoginList {
    /// At most 100.
    pub sessions: Vec<LoginInfo>,
}

/// `POST /v1/rooms`: create a room.
#[derive(Debug, Clone, schemars::JsonSchema, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// Most players; the node's default when absent.
    pub max_players: Option<u32>,
    /// Game logic the node runs for the room (e.g. `rollback`, `snapshot`); none when absent.
    #[serde(default)]
    pub mode: Option<String>,
}

/// A room as the API shows it.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room's id.
    pub room_id: u64,
    /// Most players.
    pub max_players: u32,
    /// Players connected now.
    pub players: Vec<u64>,
    /// Each player's last report of its path to each peer.
    pub paths: Vec<PathInfo>,
    /// The room's game logic, if any.
    #[serde(default)]
    pub mode: Option<String>,
    /// The logic's own report (stats, verdicts), refreshed about twice a second.
    #[serde(default)]
    pub logic: Option<serde_json::Value>,
}

/// One player's report of its path to one peer.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
pub struct PathInfo {
    /// The reporting player.
    pub from: u64,
    /// The peer.
    pub to: u64,
    /// `"direct"` or `"relay"`.
    pub path: String,
    /// Smoothed RTT, microseconds.
    pub rtt_us: u64,
}

/// `POST /v1/rooms/{id}/join`: ask for a connect ticket.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRoom {
    /// Hex SHA-256 of the certificate the player's QUIC endpoint will present.
    pub fingerprint: String,
}

/// A connect ticket and where to use it.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
pub struct JoinTicket {
    /// The room.
    pub room_id: u64,
    /// The player.
    pub player_id: u64,
    /// QUIC address of the node.
    pub node_addr: String,
    /// Hex fingerprint of the node's QUIC certificate: the client pins it.
    pub node_fingerprint: String,
    /// Hex of the sealed ticket.
    pub ticket: String,
    /// Milliseconds until the ticket expires.
    pub expires_in_ms: u64,
}

/// Every error body: a stable machine-readable code and a message for humans.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable code, e.g. `unauthorized`, `bad_request`, `not_found`, `room_full`.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
    /// For internal errors (500): the id the node logged the cause under, to quote to its
    /// operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A friend as `GET /v1/friends` lists it.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq, Eq)]
pub struct Friend {
    /// The other player.
    pub player_id: u64,
    /// `friend`, `invite_sent`, `invite_received` or `blocked`.
    pub state: String,
}

/// `POST /v1/lobbies`: create a party or a lobby.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateLobby {
    /// `party` (small, invite-based, enters matchmaking as one ticket), `lobby` (searchable) or
    /// `group` (a lasting community of up to 1,000).
    pub kind: String,
    /// A name, 1-64 characters.
    #[serde(default)]
    pub name: Option<String>,
    /// Most members: party 1-16, lobby 1-256, group 1-1000.
    pub max_members: u32,
    /// Whether anyone may join without an invite.
    #[serde(default)]
    pub open: bool,
    /// Searchable attributes: up to 16 string keys with string or number values.
    #[serde(default)]
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

/// A party or lobby.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
pub struct LobbyInfo {
    /// Its id.
    pub lobby_id: u64,
    /// `party` or `lobby`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The leader.
    pub leader: u64,
    /// Members, in join order.
    pub members: Vec<u64>,
    /// Most members.
    pub max_members: u32,
    /// Open to anyone.
    pub open: bool,
    /// Attributes.
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

/// `POST /v1/lobbies/{id}/invite|kick|promote`.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    /// The player concerned.
    pub player_id: u64,
}

/// `PATCH /v1/lobbies/{id}`: change attributes or openness (leader only).
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateLobby {
    /// New attributes (replacing the old ones).
    #[serde(default)]
    pub attrs: Option<serde_json::Map<String, serde_json::Value>>,
    /// New openness.
    #[serde(default)]
    pub open: Option<bool>,
}

/// `POST /v1/chat/{channel}`.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendChat {
    /// The text, at most the node's limit (2 KiB by default).
    pub body: String,
}

/// A chat message.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// Increasing id within the node's database; pages use it as the cursor.
    pub id: i64,
    /// The channel: `lobby.<id>`, `dm.<a>.<b>` (a < b) or `room.<id>`.
    pub channel: String,
    /// The sender.
    pub sender: u64,
    /// The text.
    pub body: String,
    /// Unix ms.
    pub created_ms: i64,
}

/// A page of chat history, newest first.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
pub struct ChatPage {
    /// Messages, newest first.
    pub messages: Vec<ChatMessage>,
    /// Pass as `before` for the next (older) page; absent at the end.
    pub next_before: Option<i64>,
}

/// `GET /v1/wallet/history`: transfers touching the caller, newest first.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq)]
pub struct TransferPage {
    /// Transfers, newest first.
    pub transfers: Vec<TransferRecord>,
    /// Pass as `before` for the next (older) page; absent at the end.
    pub next_before: Option<i64>,
}

/// A transfer chain held for review by the fraud checks.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq)]
pub struct HeldTransfer {
    /// The held chain's id (`<player>:<client id>`), for approve and reject.
    pub id: String,
    /// The player it would pay.
    pub player_id: u64,
    /// The fraud score that held it.
    pub score: f64,
    /// Why, for the reviewer.
    pub reasons: String,
    /// When it was held, ms since the Unix epoch.
    pub created_ms: i64,
}

/// `GET /v1/admin/held`: held transfers, oldest first.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq)]
pub struct HeldPage {
    /// Held transfers, oldest first.
    pub held: Vec<HeldTransfer>,
    /// Pass as `after` for the next page; absent at the end.
    pub next_after: Option<String>,
}

/// `GET /v1/leaderboards/{id}` and its archived seasons: records by rank.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq)]
pub struct BoardPage {
    /// Records in rank order.
    pub records: Vec<BoardRecord>,
    /// Pass as `start` for the next page; absent at the end.
    pub next_start: Option<u64>,
}

/// `GET /v1/friends`: friends, requests and blocks, by player id.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq, Eq)]
pub struct FriendPage {
    /// Friends, requests and blocks, by the other player's id.
    pub friends: Vec<Friend>,
    /// Pass as `after` for the next page; absent at the end.
    pub next_after: Option<u64>,
}

/// `GET /v1/lobbies`: lobbies or groups matching a search, newest first.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
pub struct LobbyPage {
    /// Matching lobbies, newest first.
    pub lobbies: Vec<LobbyInfo>,
    /// Pass as `before` to search on; absent when every lobby was searched.
    pub next_before: Option<u64>,
}

/// A player's presence.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq, Eq)]
pub struct Presence {
    /// The player.
    pub player_id: u64,
    /// Online anywhere in the cluster.
    pub online: bool,
    /// The status text the player set (`"in match"`...), if online.
    pub status: Option<String>,
}

/// Real-time events, one JSON object per WebSocket text message (`GET /v1/events`).
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The connection is ready: events from now on reach it.
    Ready {
        /// The player.
        player_id: u64,
    },
    /// A chat message in a channel the player is in.
    Chat {
        /// The message.
        message: ChatMessage,
    },
    /// A friend's presence changed.
    Presence {
        /// The new presence.
        presence: Presence,
    },
    /// Something happened in a party or lobby the player is in (or was invited to).
    Lobby {
        /// The lobby.
        lobby_id: u64,
        /// `invited`, `joined`, `left`, `kicked`, `promoted`, `updated`.
        what: String,
        /// The player it happened to.
        player_id: u64,
    },
    /// A friend request, acceptance or removal.
    Friend {
        /// The other player.
        player_id: u64,
        /// The new state seen from the receiver: `invite_received`, `friend`, `removed`.
        state: String,
    },
    /// A matchmaking ticket found a match.
    MatchFound {
        /// The match.
        found: MatchFound,
    },
    /// Something the player sent on the socket was refused (see [`ClientEvent`]).
    Error {
        /// Stable code, as in [`ApiError`].
        code: String,
        /// What went wrong.
        message: String,
    },
}

/// What a player may send on the event WebSocket, one JSON object per text message. A chat
/// message sent this way reaches the channel (and comes back as a `chat` event) exactly as
/// one sent with `POST /v1/chat/{channel}`; a refused one is answered with an `error` event.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientEvent {
    /// Send a chat message.
    Chat {
        /// `lobby.<id>`, `dm.<a>.<b>` or `room.<id>`.
        channel: String,
        /// The text.
        body: String,
    },
    /// Set the player's presence status (shown to friends while the socket is open).
    Presence {
        /// The status, e.g. `online`, `in_match`.
        status: String,
    },
}

/// `POST /v1/matchmaker/tickets`.
#[derive(Debug, Clone, schemars::JsonSchema, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// The pool (game mode), e.g. `duel`; the node configures its sizes.
    pub pool: String,
    /// Enter as this party (the caller must lead it); all members share the ticket.
    #[serde(default)]
    pub party_id: Option<u64>,
    /// String properties others' queries can test.
    #[serde(default)]
    pub string_props: std::collections::BTreeMap<String, String>,
    /// Numeric properties others' queries can test.
    #[serde(default)]
    pub numeric_props: std::collections::BTreeMap<String, f64>,
    /// Clauses every other ticket in the match must satisfy.
    #[serde(default)]
    pub must: Vec<Clause>,
    /// Clauses no other ticket in the match may satisfy.
    #[serde(default)]
    pub must_not: Vec<Clause>,
    /// Measured round-trip times to each region, ms.
    #[serde(default)]
    pub latencies: std::collections::BTreeMap<String, u32>,
    /// How long the ticket may wait, ms (default 5 minutes, at most 1 hour).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

/// One query clause.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Clause {
    /// The string property `key` equals `value`.
    Eq {
        /// Property.
        key: String,
        /// Value.
        value: String,
    },
    /// The numeric property `key` lies in `[min, max]` (either bound optional).
    Range {
        /// Property.
        key: String,
        /// Lower bound.
        #[serde(default)]
        min: Option<f64>,
        /// Upper bound.
        #[serde(default)]
        max: Option<f64>,
    },
}

/// A ticket's state as `GET /v1/matchmaker/tickets/{id}` shows it.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq)]
pub struct TicketStatus {
    /// The ticket id.
    pub ticket_id: String,
    /// `queued`, `matched`, `expired` or `cancelled`.
    pub state: String,
    /// The match, once found.
    pub found: Option<MatchFound>,
}

/// A match.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize, PartialEq)]
pub struct MatchFound {
    /// The match id (report results under it).
    pub match_id: String,
    /// The room made for it; join with `POST /v1/rooms/{room_id}/join`.
    pub room_id: u64,
    /// Its pool.
    pub pool: String,
    /// The region chosen.
    pub region: Option<String>,
    /// Every player in the match.
    pub players: Vec<u64>,
    /// Quality: skill spread (rating points), worst latency, longest wait.
    pub skill_spread: f64,
    /// Worst member latency to the region, ms.
    pub max_latency_ms: u32,
    /// Longest wait of a ticket in the match, ms.
    pub max_wait_ms: u64,
}

/// `POST /v1/matches/{id}/result` (server key): placements decide rating changes.
#[derive(Debug, Clone, schemars::JsonSchema, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchResult {
    /// `(player, placement)`; 0 is first, equal placements draw.
    pub placements: Vec<(u64, u32)>,
}

/// A skill rating (Glicko-2, Glicko scale).
#[derive(Debug, Clone, schemars::JsonSchema, Copy, Serialize, Deserialize, PartialEq)]
pub struct RatingInfo {
    /// Rating (1500 at start).
    pub rating: f64,
    /// Rating deviation.
    pub deviation: f64,
    /// Volatility.
    pub volatility: f64,
    /// Rated matches played.
    pub games: u64,
}

/// A chat channel: `lobby.<id>` (parties, lobbies and groups), `dm.<a>.<b>` (direct messages,
/// lower id first) or `room.<id>` (a game room's players).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A party's, lobby's or group's channel.
    Lobby(u64),
    /// Direct messages between two players (lower id first).
    Direct(u64, u64),
    /// A game room's channel.
    Room(u64),
}

impl Channel {
    /// Parses a channel name; `None` if it is not one.
    pub fn parse(s: &str) -> Option<Channel> {
        let mut parts = s.split('.');
        let kind = parts.next()?;
        let a = parts.next()?;
        let b = parts.next();
        if parts.next().is_some() {
            return None;
        }
        let num = |t: &str| -> Option<u64> {
            if t.is_empty() || t.len() > 20 || !t.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        match (kind, b) {
            ("lobby", None) => Some(Channel::Lobby(num(a)?)),
            ("room", None) => Some(Channel::Room(num(a)?)),
            ("dm", Some(b)) => {
                let (a, b) = (num(a)?, num(b)?);
                (a < b).then_some(Channel::Direct(a, b))
            }
            _ => None,
        }
    }

    /// The direct channel between two players.
    pub fn direct(a: u64, b: u64) -> Channel {
        Channel::Direct(a.min(b), a.max(b))
    }

    /// Its name.
    pub fn name(&self) -> String {
        match self {
            Channel::Lobby(id) => format!("lobby.{id}"),
            Channel::Direct(a, b) => format!("dm.{a}.{b}"),
            Channel::Room(id) => format!("room.{id}"),
        }
    }
}

// ---- Economy and rankings ----

/// The system's owner id.
pub const SYSTEM: u64 = 0;

/// Which ledger account: an owner (player id, or [`SYSTEM`]) and a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash, schemars::JsonSchema)]
pub struct AccountRef {
    /// The owner.
    pub owner: u64,
    /// `wallet` for players; `mint`, `store`, `bonus-pool:<code>`... for the system.
    pub name: String,
}

impl AccountRef {
    /// A player's wallet.
    pub fn wallet(owner: u64) -> Self {
        AccountRef {
            owner,
            name: "wallet".into(),
        }
    }

    /// The system's mint (new money comes from here, burned money goes back).
    pub fn mint() -> Self {
        AccountRef {
            owner: SYSTEM,
            name: "mint".into(),
        }
    }

    /// A system account.
    pub fn system(name: &str) -> Self {
        AccountRef {
            owner: SYSTEM,
            name: name.into(),
        }
    }
}

/// A stored transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TransferRecord {
    /// Order of application.
    pub seq: i64,
    /// The stored (scoped) id.
    pub id: String,
    /// The chain it belongs to (the first transfer's id).
    pub chain: String,
    /// Debited account.
    pub debit: AccountRef,
    /// Credited account.
    pub credit: AccountRef,
    /// Currency.
    pub currency: String,
    /// Amount.
    pub amount: u64,
    /// Kind.
    pub kind: String,
    /// Item moved, if any.
    pub item_id: Option<String>,
    /// Unix ms.
    pub created_ms: i64,
}

/// What a chain did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChainResult {
    /// The chain's transfers as stored.
    pub transfers: Vec<TransferRecord>,
    /// True when this was a retry of a chain already applied (nothing moved this time).
    pub replayed: bool,
}

/// A balance as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Balance {
    /// Account name.
    pub name: String,
    /// Currency.
    pub currency: String,
    /// Balance.
    pub balance: i64,
}

/// A bonus code's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BonusCode {
    /// The code players type, 3-32 characters of `[A-Z0-9-]`.
    pub code: String,
    /// Reward currency.
    pub currency: String,
    /// Reward amount.
    pub amount: u64,
    /// Redemptions in all.
    pub global_limit: u64,
    /// Redemptions per player.
    pub per_player_limit: u64,
    /// Unix ms after which it no longer redeems.
    pub expires_ms: i64,
    /// Eligibility: the account must be at least this old (ms).
    #[serde(default)]
    pub min_account_age_ms: i64,
}

/// The outcome of a redemption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Redemption {
    /// Applied.
    Redeemed {
        /// The chain.
        chain: ChainResult,
    },
    /// Held for review: nothing moved yet.
    Held {
        /// The fraud score (0-1).
        score: f64,
        /// Why.
        reasons: Vec<String>,
    },
}

/// A gift: currency (or a unique item) from one player's wallet to another's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gift {
    /// The sender's id for it (idempotency).
    pub id: String,
    /// The receiver.
    pub to: u64,
    /// Currency, or `item:<type>` with `item_id`.
    pub currency: String,
    /// Amount (1 for an item).
    pub amount: u64,
    /// A unique item to hand over.
    #[serde(default)]
    pub item_id: Option<String>,
}

impl Gift {
    /// A gift.
    pub fn new(id: &str, to: u64, currency: &str, amount: u64, item_id: Option<String>) -> Gift {
        Gift {
            id: id.to_owned(),
            to,
            currency: currency.to_owned(),
            amount,
            item_id,
        }
    }
}

/// One entry of the store catalogue: what it costs and what it gives (an amount of a currency,
/// or one unique item of `item_type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreItem {
    /// Stock-keeping id, 1-48 characters of `[a-z0-9:_-]`.
    pub sku: String,
    /// What the player pays in.
    pub price_currency: String,
    /// How much.
    pub price: u64,
    /// What the player gets (a currency, or `item:<type>` with `item_type`).
    pub gives_currency: String,
    /// How much of it (1 for a unique item).
    pub gives_amount: u64,
    /// A unique item of this type, minted per purchase.
    #[serde(default)]
    pub item_type: Option<String>,
}

/// How a submission combines with the stored score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// Keep the better of old and new (higher on a descending board, lower on an ascending one).
    Best,
    /// Replace.
    Set,
    /// Add.
    Incr,
    /// Subtract.
    Decr,
}

impl Operator {
    /// The operator's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Best => "best",
            Operator::Set => "set",
            Operator::Incr => "incr",
            Operator::Decr => "decr",
        }
    }

    /// The operator named `s`.
    pub fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "best" => Operator::Best,
            "set" => Operator::Set,
            "incr" => Operator::Incr,
            "decr" => Operator::Decr,
            _ => return None,
        })
    }
}

/// A board's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BoardDef {
    /// 1-64 characters of `[a-z0-9_-]`.
    pub id: String,
    /// Higher scores rank first.
    pub descending: bool,
    /// How submissions combine.
    pub operator: Operator,
    /// Season reset schedule (five-field cron, UTC); the board never resets when absent.
    #[serde(default)]
    pub reset_cron: Option<String>,
}

/// One leaderboard record as queries return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BoardRecord {
    /// 0-based rank in the board's order.
    pub rank: usize,
    /// The player.
    pub player_id: u64,
    /// The score.
    pub score: i64,
    /// What the submitter attached (JSON text, at most 1 KiB).
    pub metadata: String,
}

/// `GET /v1/wallet`: balances and unique items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WalletView {
    /// Balances of the player's ledger accounts.
    pub balances: Vec<Balance>,
    /// Unique items held: `(item id, item type)`.
    pub items: Vec<(String, String)>,
}

/// `POST /v1/bonus/redeem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The code.
    pub code: String,
    /// The player's id for this redemption (a retry with the same id is answered, not applied).
    pub id: String,
}

/// `POST /v1/store/purchase`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// The catalogue entry.
    pub sku: String,
    /// The player's id for this purchase (idempotency), at most 48 characters.
    pub id: String,
}

/// `POST /v1/admin/grant` (server key): currency from the mint, e.g. a match reward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// The studio's id for it (idempotency).
    pub id: String,
    /// The receiving player.
    pub player: u64,
    /// Currency.
    pub currency: String,
    /// Amount.
    pub amount: u64,
    /// What it is (default `grant`).
    #[serde(default)]
    pub kind: Option<String>,
}

/// `POST /v1/admin/items` (server key): mint one unique item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MintItemRequest {
    /// The studio's id for it (idempotency).
    pub id: String,
    /// The receiving player.
    pub player: u64,
    /// The item's type.
    pub item_type: String,
}

/// The answer to a mint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MintedItem {
    /// The new item's id.
    pub item_id: String,
}

/// `POST /v1/leaderboards/{id}/scores` (server key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// The player.
    pub player: u64,
    /// The submitted score (combined with the stored one by the board's operator).
    pub score: i64,
    /// Any JSON value, kept with the record (at most 1 KiB serialized).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// The stored score after a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScoreReply {
    /// The score now on the board.
    pub score: i64,
}

/// A player's rank on a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RankReply {
    /// 0-based rank in the board's order; absent when the player has no record.
    pub rank: Option<u64>,
}

/// `POST /v1/content/{game}/chunks`: what a batch upload did (the body is raw chunk frames,
/// see `volley_content::batch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkBatchReply {
    /// Chunks in the batch.
    pub chunks: u64,
    /// Of them, chunks the origin did not have before (the rest were already stored).
    pub stored: u64,
}

/// One version a node holds, from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentVersion {
    /// The version's name.
    pub version: String,
    /// Files in the build.
    pub files: u64,
    /// The build's size in bytes.
    pub bytes: u64,
    /// Distinct chunks.
    pub chunks: u64,
    /// When the node stored the manifest (Unix ms).
    pub stored_ms: u64,
}

/// `GET /v1/content/{game}/versions`: the versions a node holds, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentVersions {
    /// The versions.
    pub versions: Vec<ContentVersion>,
}

/// `POST /v1/content/{game}/collect`: what collecting the chunks no version references did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentCollected {
    /// Versions whose manifests were read for the chunks they reference.
    pub versions: u64,
    /// Chunks stored before.
    pub chunks: u64,
    /// Of them, chunks a version references (kept).
    pub referenced: u64,
    /// Unreferenced, but uploaded or asked about within the grace period (kept: a publish
    /// uploads its chunks before its manifest).
    pub held: u64,
    /// Unreferenced chunks dropped.
    pub dropped: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
    /// Chunks whose bytes on disk no longer matched their name (dropped too).
    pub corrupt: u64,
    /// Pack files removed.
    pub packs_removed: u64,
    /// Bytes of kept chunks copied out of them first.
    pub moved_bytes: u64,
    /// Bytes of the pack files before.
    pub disk_bytes_before: u64,
    /// And after.
    pub disk_bytes_after: u64,
    /// Unreferenced bytes left in packs under a tenth unreferenced (not worth rewriting yet).
    pub waste_left_bytes: u64,
}

/// `POST /v1/content/{game}/missing`: chunk names in, the missing ones out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkList {
    /// Chunk names (hex BLAKE3 hashes).
    pub chunks: Vec<String>,
}

/// `POST /v1/content/{game}/versions/{version}/peers`: a player announces that it holds (part
/// of) a version and serves chunks on `port` (at the address the node sees it from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerAnnounce {
    /// The UDP port its chunk server listens on.
    pub port: u16,
    /// Chunks of the version it holds.
    pub have_chunks: u32,
    /// Chunks the version has.
    pub total_chunks: u32,
}

/// One peer in a swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SwarmPeer {
    /// The player.
    pub player_id: u64,
    /// Where it serves chunks (`ip:port`).
    pub addr: String,
    /// Chunks it holds.
    pub have_chunks: u32,
    /// Chunks the version has.
    pub total_chunks: u32,
}

/// The answer to an announce: other live peers, those holding the most first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SwarmPeers {
    /// The peers (at most 50).
    pub peers: Vec<SwarmPeer>,
}
