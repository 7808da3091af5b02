//! The node's HTTP API, as the SDK calls it.

use volley_proto::api::{
    AccountInfo, ApiError, ChatMessage, ChatPage, CreateLobby, CreateRoom, CustomLogin,
    DeviceLogin, EmailLogin, EmailRegister, Event, Friend, JoinRoom, JoinTicket, LobbyInfo,
    MemberRequest, Presence, RatingInfo, RefreshRequest, RoomInfo, SendChat, Session,
    TicketRequest, TicketStatus,
};
use volley_proto::api::{
    BoardDef, BoardRecord, BonusCode, ChainResult, Gift, GrantRequest, MintItemRequest, MintedItem,
    PurchaseRequest, RankReply, RedeemRequest, Redemption, ScoreReply, ScoreRequest, StoreItem,
    TransferPage, WalletView,
};
use volley_proto::api::{BoardPage, ClientEvent, FriendPage, HeldPage, LobbyPage};
use volley_proto::api::{PeerAnnounce, SwarmPeers};
use volley_proto::Fingerprint;

use crate::Error;

/// An HTTP client for one node, holding the session token after login.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    /// The pinned TLS configuration, for the event socket too.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    base: String,
    token: Option<String>,
    device: Option<String>,
}

impl Api {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7350`).
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_client(base, reqwest::Client::new(), None)
    }

    fn with_client(
        base: impl Into<String>,
        http: reqwest::Client,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Self {
        Api {
            http,
            tls,
            base: base.into().trim_end_matches('/').to_owned(),
            token: None,
            device: None,
        }
    }

    /// A client for a node serving HTTPS with its own certificate (`volley serve --https`):
    /// the connection is trusted only if the node presents the certificate whose fingerprint
    /// is `node` (printed at start-up, and the one QUIC tickets carry). A node with a
    /// certificate from a public authority needs only [`Api::new`] with an `https://` base.
    pub fn pinned(base: impl Into<String>, node: Fingerprint) -> Result<Self, Error> {
        let tls = volley_net::tls::https_client_crypto(node)
            .map_err(|e| Error::Http(format!("TLS: {e}")))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .build()
            .map_err(|e| Error::Http(e.to_string()))?;
        Ok(Self::with_client(
            base,
            http,
            Some(std::sync::Arc::new(tls)),
        ))
    }

    /// Reports `device` (a stable id of this installation or hardware) with every call, in
    /// `x-volley-device`; the node's fraud checks count accounts per device. Set by
    /// [`Api::login_device`] unless set before.
    pub fn set_device(&mut self, device: impl Into<String>) {
        self.device = Some(device.into());
    }

    /// A plain GET returning the body as text (e.g. `/metrics`).
    pub async fn raw_get(url: &str) -> Result<String, Error> {
        let resp = reqwest::get(url)
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        resp.text().await.map_err(|e| Error::Http(e.to_string()))
    }

    /// The session token, once logged in.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Uses `token` for later calls (e.g. a session restored from storage).
    pub fn set_token(&mut self, token: impl Into<String>) {
        self.token = Some(token.into());
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, Error> {
        let bytes = self.send(req).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Http(format!("bad response body: {e}")))
    }

    async fn call_empty(&self, req: reqwest::RequestBuilder) -> Result<(), Error> {
        self.send(req).await.map(|_| ())
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, Error> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let req = match &self.device {
            Some(d) => req.header("x-volley-device", d),
            None => req,
        };
        let resp = req.send().await.map_err(|e| Error::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Error::Http(e.to_string()))?;
        if !status.is_success() {
            let err: ApiError = serde_json::from_slice(&bytes).unwrap_or(ApiError {
                code: "http".into(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
                request_id: None,
            });
            return Err(Error::Api {
                status: status.as_u16(),
                code: err.code,
                message: err.message,
            });
        }
        Ok(bytes.to_vec())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn login_with(
        &mut self,
        path: &str,
        body: impl serde::Serialize,
    ) -> Result<Session, Error> {
        let s: Session = self
            .call(self.http.post(self.url(path)).json(&body))
            .await?;
        self.token = Some(s.token.clone());
        Ok(s)
    }

    /// Signs up with email and password and keeps the session.
    pub async fn register_email(
        &mut self,
        email: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> Result<Session, Error> {
        let body = EmailRegister {
            email: email.into(),
            password: password.into(),
            display_name: display_name.map(str::to_owned),
        };
        self.login_with("/v1/auth/email/register", body).await
    }

    /// Logs in with email and password and keeps the session.
    pub async fn login_email(&mut self, email: &str, password: &str) -> Result<Session, Error> {
        let body = EmailLogin {
            email: email.into(),
            password: password.into(),
        };
        self.login_with("/v1/auth/email", body).await
    }

    /// Server-to-server: logs a studio's player in by custom id with the node's server key.
    pub async fn login_custom(
        &mut self,
        server_key: &str,
        custom_id: &str,
    ) -> Result<Session, Error> {
        let req = self
            .http
            .post(self.url("/v1/auth/custom"))
            .header("x-volley-server-key", server_key)
            .json(&CustomLogin {
                custom_id: custom_id.into(),
            });
        let s: Session = self.call(req).await?;
        self.token = Some(s.token.clone());
        Ok(s)
    }

    /// Exchanges a refresh token for a new session (and refresh token) and keeps it.
    pub async fn refresh(&mut self, refresh_token: &str) -> Result<Session, Error> {
        let body = RefreshRequest {
            refresh_token: refresh_token.into(),
        };
        self.login_with("/v1/auth/refresh", body).await
    }

    /// Ends the session (and its refresh family).
    pub async fn logout(&mut self, refresh_token: Option<&str>) -> Result<(), Error> {
        let mut req = self.http.post(self.url("/v1/auth/logout"));
        if let Some(r) = refresh_token {
            req = req.json(&RefreshRequest {
                refresh_token: r.into(),
            });
        }
        self.call_empty(req).await?;
        self.token = None;
        Ok(())
    }

    /// The caller's logins (each device or browser signed in), newest first.
    pub async fn sessions(&self) -> Result<volley_proto::api::LoginList, Error> {
        self.call(self.http.get(self.url("/v1/account/sessions")))
            .await
    }

    /// Ends one of the caller's logins (from [`Api::sessions`]): its session and refresh
    /// token stop working at once.
    pub async fn end_session(&self, id: &str) -> Result<(), Error> {
        self.call_empty(
            self.http
                .delete(self.url(&format!("/v1/account/sessions/{id}"))),
        )
        .await
    }

    /// Ends every login of the caller but this one.
    pub async fn end_other_sessions(&self) -> Result<(), Error> {
        self.call_empty(self.http.delete(self.url("/v1/account/sessions")))
            .await
    }

    /// The caller's account.
    pub async fn account(&self) -> Result<AccountInfo, Error> {
        self.call(self.http.get(self.url("/v1/account"))).await
    }

    /// Open lobbies (`kind` `lobby`) or groups (`group`) whose attributes match every `filter`
    /// pair, newest first: a page of at most `limit`, searching on from `before` (a previous
    /// page's `next_before`).
    pub async fn search_lobbies(
        &self,
        kind: &str,
        filter: &[(&str, &str)],
        before: Option<u64>,
        limit: usize,
    ) -> Result<LobbyPage, Error> {
        let mut q: Vec<(String, String)> = vec![
            ("kind".into(), kind.to_owned()),
            ("limit".into(), limit.to_string()),
        ];
        if let Some(b) = before {
            q.push(("before".into(), b.to_string()));
        }
        q.extend(
            filter
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self.call(self.http.get(self.url("/v1/lobbies")).query(&q))
            .await
    }

    /// Friends, requests and blocks, every page of them.
    pub async fn friends(&self) -> Result<Vec<Friend>, Error> {
        let mut all = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let mut q = vec![("limit", "100".to_owned())];
            if let Some(a) = after {
                q.push(("after", a.to_string()));
            }
            let page: FriendPage = self
                .call(self.http.get(self.url("/v1/friends")).query(&q))
                .await?;
            all.extend(page.friends);
            match page.next_after {
                Some(a) => after = Some(a),
                None => return Ok(all),
            }
        }
    }

    /// Sends or accepts a friend request.
    pub async fn add_friend(&self, player: u64) -> Result<Friend, Error> {
        self.call(self.http.post(self.url(&format!("/v1/friends/{player}"))))
            .await
    }

    /// A player's presence.
    pub async fn presence(&self, player: u64) -> Result<Presence, Error> {
        self.call(self.http.get(self.url(&format!("/v1/presence/{player}"))))
            .await
    }

    /// Creates a party or lobby.
    pub async fn create_lobby(&self, req: &CreateLobby) -> Result<LobbyInfo, Error> {
        self.call(self.http.post(self.url("/v1/lobbies")).json(req))
            .await
    }

    /// A party or lobby.
    pub async fn lobby(&self, id: u64) -> Result<LobbyInfo, Error> {
        self.call(self.http.get(self.url(&format!("/v1/lobbies/{id}"))))
            .await
    }

    /// Joins a party or lobby.
    pub async fn join_lobby(&self, id: u64) -> Result<LobbyInfo, Error> {
        self.call(self.http.post(self.url(&format!("/v1/lobbies/{id}/join"))))
            .await
    }

    /// Leaves a party or lobby.
    pub async fn leave_lobby(&self, id: u64) -> Result<(), Error> {
        self.call_empty(self.http.post(self.url(&format!("/v1/lobbies/{id}/leave"))))
            .await
    }

    /// Invites a player into a party or lobby.
    pub async fn invite(&self, id: u64, player: u64) -> Result<(), Error> {
        self.call_empty(
            self.http
                .post(self.url(&format!("/v1/lobbies/{id}/invite")))
                .json(&MemberRequest { player_id: player }),
        )
        .await
    }

    /// Sends a chat message.
    pub async fn send_chat(&self, channel: &str, body: &str) -> Result<ChatMessage, Error> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/chat/{channel}")))
                .json(&SendChat { body: body.into() }),
        )
        .await
    }

    /// A page of chat history, newest first.
    pub async fn chat_history(
        &self,
        channel: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<ChatPage, Error> {
        let mut q = vec![("limit", limit.to_string())];
        if let Some(b) = before {
            q.push(("before", b.to_string()));
        }
        self.call(
            self.http
                .get(self.url(&format!("/v1/chat/{channel}")))
                .query(&q),
        )
        .await
    }

    /// The caller's balances and unique items.
    pub async fn wallet(&self) -> Result<WalletView, Error> {
        self.call(self.http.get(self.url("/v1/wallet"))).await
    }

    /// Transfers touching the caller, newest first; `before` is a `seq` from an earlier page.
    pub async fn wallet_history(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<TransferPage, Error> {
        let mut q = vec![("limit", limit.to_string())];
        if let Some(b) = before {
            q.push(("before", b.to_string()));
        }
        self.call(self.http.get(self.url("/v1/wallet/history")).query(&q))
            .await
    }

    /// Gives currency (or a unique item) to another player; retrying with the same `gift.id`
    /// returns the first result.
    pub async fn gift(&self, gift: &Gift) -> Result<ChainResult, Error> {
        self.call(self.http.post(self.url("/v1/wallet/gift")).json(gift))
            .await
    }

    /// Redeems a bonus code; `id` makes retries safe. The answer may be a hold for review.
    pub async fn redeem(&self, code: &str, id: &str) -> Result<Redemption, Error> {
        let body = RedeemRequest {
            code: code.into(),
            id: id.into(),
        };
        self.call(self.http.post(self.url("/v1/bonus/redeem")).json(&body))
            .await
    }

    /// The store catalogue.
    pub async fn store(&self) -> Result<Vec<StoreItem>, Error> {
        self.call(self.http.get(self.url("/v1/store"))).await
    }

    /// Buys `sku`; `id` makes retries safe (paid and delivered once).
    pub async fn purchase(&self, sku: &str, id: &str) -> Result<ChainResult, Error> {
        let body = PurchaseRequest {
            sku: sku.into(),
            id: id.into(),
        };
        self.call(self.http.post(self.url("/v1/store/purchase")).json(&body))
            .await
    }

    /// Records at ranks `start..start + count` of a board.
    pub async fn leaderboard(
        &self,
        board: &str,
        start: usize,
        count: usize,
    ) -> Result<BoardPage, Error> {
        let q = [("start", start), ("count", count)];
        self.call(
            self.http
                .get(self.url(&format!("/v1/leaderboards/{board}")))
                .query(&q),
        )
        .await
    }

    /// The caller's record and `radius` records either side.
    pub async fn leaderboard_around_me(
        &self,
        board: &str,
        radius: usize,
    ) -> Result<Vec<BoardRecord>, Error> {
        self.call(
            self.http
                .get(self.url(&format!("/v1/leaderboards/{board}/around-me")))
                .query(&[("radius", radius)]),
        )
        .await
    }

    /// A player's 0-based rank (`None` without a record).
    pub async fn leaderboard_rank(&self, board: &str, player: u64) -> Result<Option<u64>, Error> {
        let r: RankReply = self
            .call(
                self.http
                    .get(self.url(&format!("/v1/leaderboards/{board}/rank/{player}"))),
            )
            .await?;
        Ok(r.rank)
    }

    /// A page of an archived season, by final rank.
    pub async fn leaderboard_season(
        &self,
        board: &str,
        season: i64,
        start: usize,
        count: usize,
    ) -> Result<BoardPage, Error> {
        let q = [("start", start), ("count", count)];
        self.call(
            self.http
                .get(self.url(&format!("/v1/leaderboards/{board}/seasons/{season}")))
                .query(&q),
        )
        .await
    }

    /// Server key: creates a leaderboard (idempotent for the same definition).
    pub async fn create_leaderboard(&self, server_key: &str, def: &BoardDef) -> Result<(), Error> {
        self.call_empty(
            self.admin_post(server_key, "/v1/admin/leaderboards")
                .json(def),
        )
        .await
    }

    /// Server key: submits a score; returns the stored score after the board's operator.
    pub async fn submit_score(
        &self,
        server_key: &str,
        board: &str,
        score: &ScoreRequest,
    ) -> Result<i64, Error> {
        let r: ScoreReply = self
            .call(
                self.admin_post(server_key, &format!("/v1/leaderboards/{board}/scores"))
                    .json(score),
            )
            .await?;
        Ok(r.score)
    }

    /// Server key: grants currency from the mint (idempotent by `grant.id`).
    pub async fn grant(
        &self,
        server_key: &str,
        grant: &GrantRequest,
    ) -> Result<ChainResult, Error> {
        self.call(self.admin_post(server_key, "/v1/admin/grant").json(grant))
            .await
    }

    /// Server key: mints a unique item (idempotent by `mint.id`); returns its id.
    pub async fn mint_item(
        &self,
        server_key: &str,
        mint: &MintItemRequest,
    ) -> Result<String, Error> {
        let r: MintedItem = self
            .call(self.admin_post(server_key, "/v1/admin/items").json(mint))
            .await?;
        Ok(r.item_id)
    }

    /// Server key: adds or replaces a store catalogue entry.
    pub async fn put_store_item(&self, server_key: &str, item: &StoreItem) -> Result<(), Error> {
        self.call_empty(self.admin_post(server_key, "/v1/admin/store").json(item))
            .await
    }

    /// Server key: creates a bonus code.
    pub async fn create_bonus_code(&self, server_key: &str, code: &BonusCode) -> Result<(), Error> {
        self.call_empty(
            self.admin_post(server_key, "/v1/admin/bonus-codes")
                .json(code),
        )
        .await
    }

    /// Announces that this player holds `have.have_chunks` of a version and serves chunks on
    /// `have.port`; returns other peers of that version, most complete first. Re-announce
    /// within 90 s to stay listed.
    pub async fn announce_peer(
        &self,
        game: &str,
        version: &str,
        have: &PeerAnnounce,
    ) -> Result<SwarmPeers, Error> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/content/{game}/versions/{version}/peers")))
                .json(have),
        )
        .await
    }

    /// Leaves a version's swarm.
    pub async fn leave_swarm(&self, game: &str, version: &str) -> Result<(), Error> {
        self.call_empty(
            self.http
                .delete(self.url(&format!("/v1/content/{game}/versions/{version}/peers"))),
        )
        .await
    }

    /// A POST carrying the studio's server key.
    /// Transfers held for review, oldest first (server key): a page of at most `limit` after
    /// `after` (a previous page's `next_after`).
    pub async fn held(
        &self,
        server_key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<HeldPage, Error> {
        let mut q = vec![("limit", limit.to_string())];
        if let Some(a) = after {
            q.push(("after", a.to_owned()));
        }
        self.call(
            self.http
                .get(self.url("/v1/admin/held"))
                .header("x-volley-server-key", server_key)
                .query(&q),
        )
        .await
    }

    fn admin_post(&self, server_key: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .header("x-volley-server-key", server_key)
    }

    /// Round-trip time to this node in ms (median of `samples` `GET /v1/health` calls on one
    /// kept-alive connection): what a game reports per region in
    /// [`TicketRequest::latencies`], measuring against one node of each region.
    pub async fn measure_rtt_ms(&self, samples: usize) -> Result<u32, Error> {
        let mut times = Vec::with_capacity(samples.max(1));
        for _ in 0..samples.max(1) {
            let start = std::time::Instant::now();
            self.send(self.http.get(self.url("/v1/health"))).await?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        Ok(times.get(times.len() / 2).copied().unwrap_or(0.0).ceil() as u32)
    }

    /// Queues a matchmaking ticket.
    pub async fn submit_ticket(&self, req: &TicketRequest) -> Result<TicketStatus, Error> {
        self.call(self.http.post(self.url("/v1/matchmaker/tickets")).json(req))
            .await
    }

    /// A ticket's state (and its match once found).
    pub async fn ticket(&self, id: &str) -> Result<TicketStatus, Error> {
        self.call(
            self.http
                .get(self.url(&format!("/v1/matchmaker/tickets/{id}"))),
        )
        .await
    }

    /// Cancels a queued ticket.
    pub async fn cancel_ticket(&self, id: &str) -> Result<(), Error> {
        self.call_empty(
            self.http
                .delete(self.url(&format!("/v1/matchmaker/tickets/{id}"))),
        )
        .await
    }

    /// The caller's rating in `pool`.
    pub async fn rating(&self, pool: &str) -> Result<RatingInfo, Error> {
        self.call(self.http.get(self.url(&format!("/v1/ratings/{pool}"))))
            .await
    }

    /// Opens the real-time event stream (WebSocket). The first event is [`Event::Ready`].
    pub async fn events(&self) -> Result<Events, Error> {
        let token = self
            .token
            .as_deref()
            .ok_or_else(|| Error::Http("log in before opening events".into()))?;
        let ws_base = self
            .base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let url = format!("{ws_base}/v1/events?token={token}");
        let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector)
            .await
            .map_err(|e| Error::Http(format!("events: {e}")))?;
        Ok(Events { ws })
    }

    /// Logs in with a device id (creating the account on first use) and keeps the token.
    pub async fn login_device(&mut self, device_id: &str) -> Result<Session, Error> {
        let s: Session = self
            .call(
                self.http
                    .post(format!("{}/v1/auth/device", self.base))
                    .json(&DeviceLogin {
                        device_id: device_id.to_owned(),
                    }),
            )
            .await?;
        self.token = Some(s.token.clone());
        if self.device.is_none() {
            self.device = Some(device_id.to_owned());
        }
        Ok(s)
    }

    /// Creates a room.
    pub async fn create_room(&self, max_players: Option<u32>) -> Result<RoomInfo, Error> {
        self.create_room_with_mode(max_players, None).await
    }

    /// Creates a room that runs the node's game logic `mode` (e.g. `rollback`, `snapshot`).
    pub async fn create_room_with_mode(
        &self,
        max_players: Option<u32>,
        mode: Option<&str>,
    ) -> Result<RoomInfo, Error> {
        self.call(
            self.http
                .post(format!("{}/v1/rooms", self.base))
                .json(&CreateRoom {
                    max_players,
                    mode: mode.map(str::to_owned),
                }),
        )
        .await
    }

    /// A room's members and their reported paths.
    pub async fn room(&self, room_id: u64) -> Result<RoomInfo, Error> {
        self.call(self.http.get(format!("{}/v1/rooms/{room_id}", self.base)))
            .await
    }

    /// Asks for a connect ticket bound to the certificate with `fingerprint`.
    pub async fn join(&self, room_id: u64, fingerprint: Fingerprint) -> Result<JoinTicket, Error> {
        self.call(
            self.http
                .post(format!("{}/v1/rooms/{room_id}/join", self.base))
                .json(&JoinRoom {
                    fingerprint: fingerprint.to_hex(),
                }),
        )
        .await
    }
}

/// A player's real-time events.
#[derive(Debug)]
pub struct Events {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Events {
    /// The next event; `None` once the node closed the stream.
    pub async fn next(&mut self) -> Option<Event> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => match serde_json::from_str(t.as_str()) {
                    Ok(e) => return Some(e),
                    Err(e) => tracing::warn!(error = %e, "undecodable event"),
                },
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Sends the node a message on the stream: a chat message or a presence status. A refused
    /// one comes back as an [`Event::Error`].
    pub async fn send(&mut self, msg: &ClientEvent) -> Result<(), Error> {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let text = serde_json::to_string(msg).map_err(|e| Error::Http(format!("events: {e}")))?;
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| Error::Http(format!("events: {e}")))
    }

    /// Closes the stream.
    pub async fn close(mut self) {
        if let Err(error) = self.ws.close(None).await {
            tracing::debug!(%error, "event stream already closed");
        }
    }
}
