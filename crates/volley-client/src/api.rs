//! The node's HTTP API, as the SDK calls it.

use volley_proto::api::{
    ApiError, CreateRoom, DeviceLogin, JoinRoom, JoinTicket, RoomInfo, Session,
};
use volley_proto::Fingerprint;

use crate::Error;

/// An HTTP client for one node, holding the session token after login.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7350`).
    pub fn new(base: impl Into<String>) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: base.into().trim_end_matches('/').to_owned(),
            token: None,
        }
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

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, Error> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| Error::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Error::Http(e.to_string()))?;
        if !status.is_success() {
            let err: ApiError = serde_json::from_slice(&bytes).unwrap_or(ApiError {
                code: "http".into(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            });
            return Err(Error::Api {
                status: status.as_u16(),
                code: err.code,
                message: err.message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Http(format!("bad response body: {e}")))
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
