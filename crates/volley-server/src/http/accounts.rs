//! Accounts: log in (device, email, a studio's custom id), refresh and log out, the caller's
//! account, linked login methods.

use aide::axum::routing::{delete_with, get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use schemars::JsonSchema;
use serde::Deserialize;
use volley_platform::accounts::AuthKind;
use volley_proto::api::{
    AccountInfo, CustomLogin, DeviceLogin, EmailLogin, EmailRegister, LinkRequest, RefreshRequest,
    Session,
};

use super::error::Error;
use super::extract::{
    bearer, check_server_key, Body, ClientAddr, OptionalBody, Path, Player, ServerKey,
};
use super::{doc, doc_long, AppState, Created, NoContent};

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/auth/device",
            post_with(login_device, doc("Log in (or sign up) with a device id")),
        )
        .api_route(
            "/v1/auth/email/register",
            post_with(register_email, doc("Sign up with email and password")),
        )
        .api_route(
            "/v1/auth/email",
            post_with(login_email, doc("Log in with email and password")),
        )
        .api_route(
            "/v1/auth/custom",
            post_with(
                login_custom,
                doc("Log a studio's player in by its custom id"),
            ),
        )
        .api_route(
            "/v1/auth/refresh",
            post_with(refresh, doc("Rotate a refresh token for a new session")),
        )
        .api_route(
            "/v1/auth/logout",
            post_with(
                logout,
                doc_long(
                    "End this session and its refresh family",
                    "The body may name the refresh token to revoke with the session.",
                ),
            ),
        )
        .api_route(
            "/v1/account",
            get_with(account, doc("The caller's account"))
                .patch_with(set_display_name, doc("Set the display name")),
        )
        .api_route(
            "/v1/account/sessions",
            get_with(list_logins, doc("The caller's logins (devices signed in)")).delete_with(
                end_other_logins,
                doc("End every login but the caller's own"),
            ),
        )
        .api_route(
            "/v1/account/sessions/{id}",
            delete_with(end_login, doc("End one of the caller's logins")),
        )
        .api_route(
            "/v1/account/link",
            post_with(
                link,
                doc_long(
                    "Attach a login method",
                    "Linking a custom id also needs the server key.",
                ),
            ),
        )
        .api_route(
            "/v1/account/unlink",
            post_with(unlink, doc("Detach a login method")),
        )
}

async fn login_device(
    State(api): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Body(req): Body<DeviceLogin>,
) -> Result<Json<Session>, Error> {
    api.platform.check_login_rate(peer.ip())?;
    Ok(Json(api.platform.login_device(&req.device_id).await?))
}

async fn register_email(
    State(api): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Body(req): Body<EmailRegister>,
) -> Result<Created<Session>, Error> {
    api.platform.check_login_rate(peer.ip())?;
    let s = api
        .platform
        .register_email(&req.email, &req.password, req.display_name.as_deref())
        .await?;
    Ok(Created(s))
}

async fn login_email(
    State(api): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Body(req): Body<EmailLogin>,
) -> Result<Json<Session>, Error> {
    api.platform.check_login_rate(peer.ip())?;
    Ok(Json(
        api.platform.login_email(&req.email, &req.password).await?,
    ))
}

async fn login_custom(
    State(api): State<AppState>,
    _: ServerKey,
    Body(req): Body<CustomLogin>,
) -> Result<Json<Session>, Error> {
    Ok(Json(api.platform.login_custom(&req.custom_id).await?))
}

async fn refresh(
    State(api): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Body(req): Body<RefreshRequest>,
) -> Result<Json<Session>, Error> {
    api.platform.check_login_rate(peer.ip())?;
    Ok(Json(api.platform.refresh(&req.refresh_token).await?))
}

async fn logout(
    State(api): State<AppState>,
    _: Player,
    headers: HeaderMap,
    OptionalBody(req): OptionalBody<RefreshRequest>,
) -> Result<NoContent, Error> {
    let refresh = req.map(|r| r.refresh_token);
    api.platform
        .logout(bearer(&headers)?, refresh.as_deref())
        .await?;
    Ok(NoContent)
}

async fn list_logins(
    State(api): State<AppState>,
    Player(me): Player,
    headers: HeaderMap,
) -> Result<Json<volley_proto::api::LoginList>, Error> {
    let sessions = api.platform.logins(me, bearer(&headers)?).await?;
    Ok(Json(volley_proto::api::LoginList { sessions }))
}

async fn end_login(
    State(api): State<AppState>,
    Player(me): Player,
    Path(id): Path<String>,
) -> Result<NoContent, Error> {
    if id.len() > 64 {
        return Err(Error::not_found("no such login"));
    }
    api.platform.end_login(me, &id).await?;
    Ok(NoContent)
}

async fn end_other_logins(
    State(api): State<AppState>,
    Player(me): Player,
    headers: HeaderMap,
) -> Result<NoContent, Error> {
    api.platform.end_other_logins(me, bearer(&headers)?).await?;
    Ok(NoContent)
}

async fn account(
    State(api): State<AppState>,
    Player(me): Player,
) -> Result<Json<AccountInfo>, Error> {
    Ok(Json(api.platform.account(me).await?))
}

/// A new display name.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetDisplayName {
    /// 1-32 characters.
    display_name: String,
}

async fn set_display_name(
    State(api): State<AppState>,
    Player(me): Player,
    Body(req): Body<SetDisplayName>,
) -> Result<Json<AccountInfo>, Error> {
    api.platform.set_display_name(me, &req.display_name).await?;
    Ok(Json(api.platform.account(me).await?))
}

async fn link(
    State(api): State<AppState>,
    Player(me): Player,
    headers: HeaderMap,
    Body(req): Body<LinkRequest>,
) -> Result<Json<AccountInfo>, Error> {
    let kind = AuthKind::parse(&req.kind)?;
    if kind == AuthKind::Custom {
        check_server_key(&api, &headers)?;
    }
    api.platform
        .link(me, kind, &req.id, req.password.as_deref())
        .await?;
    Ok(Json(api.platform.account(me).await?))
}

async fn unlink(
    State(api): State<AppState>,
    Player(me): Player,
    Body(req): Body<LinkRequest>,
) -> Result<Json<AccountInfo>, Error> {
    let kind = AuthKind::parse(&req.kind)?;
    api.platform.unlink(me, kind, &req.id).await?;
    Ok(Json(api.platform.account(me).await?))
}
