//! Game builds over HTTP: chunks, manifests, versions and collections (uploads need the server
//! key; downloads are public, as every chunk is checked by the player against the signed
//! manifest anyway), and the swarm tracker (players' sessions). The work is the origin's
//! ([`crate::origin`]); these handlers only map requests onto it.

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use volley_content::manifest::check_name;
use volley_proto::api::{
    ChunkBatchReply, ChunkList, ContentCollected, ContentVersions, PeerAnnounce, SwarmPeer,
    SwarmPeers,
};

use super::error::Error;
use super::extract::{Body, ClientAddr, Path, Player, RawBody, ServerKey};
use super::{doc, AppState, NoContent};
use crate::origin::cluster::PULL_HEADER;
use crate::origin::{OriginError, CHUNK_BODY_MAX, LIST_BODY_MAX, MANIFEST_BODY_MAX};

pub(super) fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/content/{game}/chunks/{hash}",
            get_with(
                get_chunk,
                doc("A build chunk by its BLAKE3 hash (raw bytes)"),
            )
            .put_with(
                put_chunk,
                doc("Upload a chunk (raw bytes; refused unless they hash to its name)"),
            )
            .layer(DefaultBodyLimit::max(CHUNK_BODY_MAX)),
        )
        .api_route(
            "/v1/content/{game}/chunks",
            post_with(
                put_chunks,
                doc(
                    "Upload many chunks with one flush to disk (raw frames: 32-byte hash, \
                     4-byte big-endian length, bytes; all are checked before any is stored)",
                ),
            )
            .layer(DefaultBodyLimit::max(volley_content::batch::BODY_MAX)),
        )
        .api_route(
            "/v1/content/{game}/missing",
            post_with(missing, doc("Which of these chunks the origin lacks"))
                .layer(DefaultBodyLimit::max(LIST_BODY_MAX)),
        )
        .api_route(
            "/v1/content/{game}/versions",
            get_with(
                list_versions,
                doc("The versions this node holds, oldest first"),
            ),
        )
        .api_route(
            "/v1/content/{game}/versions/{version}",
            get_with(get_manifest, doc("A version's signed manifest (raw bytes)"))
                .put_with(
                    put_manifest,
                    doc("Publish a signed manifest whose chunks are all uploaded"),
                )
                .delete_with(
                    delete_version,
                    doc(
                        "Withdraw a version: its manifest is removed here and on the \
                         cluster's other nodes (its chunks go at the next collection)",
                    ),
                )
                .layer(DefaultBodyLimit::max(MANIFEST_BODY_MAX)),
        )
        .api_route(
            "/v1/content/{game}/collect",
            post_with(
                collect,
                doc(
                    "Drop the chunks no version references (except those uploaded or asked \
                     about in the grace period) and give their disk space back",
                ),
            ),
        )
        .api_route(
            "/v1/content/{game}/versions/{version}/peers",
            post_with(
                announce,
                doc(
                    "Announce holding (part of) a version; answers with other peers, most \
                     complete first",
                ),
            )
            .delete_with(leave, doc("Leave a version's swarm")),
        )
}

fn is_pull(headers: &HeaderMap) -> bool {
    headers.contains_key(PULL_HEADER)
}

fn octets(data: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()
}

/// One of the node's `content_uploads_max` upload places, taken after the server key is
/// checked and before the body is read; given back when the handler ends.
struct UploadSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl axum::extract::FromRequestParts<AppState> for UploadSlot {
    type Rejection = Error;

    async fn from_request_parts(
        _: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Error> {
        state
            .uploads
            .clone()
            .try_acquire_owned()
            .map(UploadSlot)
            .map_err(|_| {
                Error::unavailable(
                    "uploads_busy",
                    "the node is reading content_uploads_max uploads; try again shortly",
                    1_000,
                )
            })
    }
}

impl aide::OperationInput for UploadSlot {}

async fn put_chunk(
    State(api): State<AppState>,
    _: ServerKey,
    _: UploadSlot,
    Path((game, hash)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<NoContent, Error> {
    api.origin.put_chunk(&game, &hash, body).await?;
    Ok(NoContent)
}

async fn put_chunks(
    State(api): State<AppState>,
    _: ServerKey,
    _: UploadSlot,
    Path(game): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<ChunkBatchReply>, Error> {
    Ok(Json(api.origin.put_chunks(&game, body).await?))
}

async fn get_chunk(
    State(api): State<AppState>,
    headers: HeaderMap,
    Path((game, hash)): Path<(String, String)>,
) -> Result<Response, Error> {
    let data = api
        .origin
        .get_chunk(&game, &hash, is_pull(&headers))
        .await?;
    Ok(octets(data))
}

async fn missing(
    State(api): State<AppState>,
    _: ServerKey,
    Path(game): Path<String>,
    Body(req): Body<ChunkList>,
) -> Result<Json<ChunkList>, Error> {
    Ok(Json(api.origin.missing(&game, &req.chunks).await?))
}

async fn put_manifest(
    State(api): State<AppState>,
    _: ServerKey,
    _: UploadSlot,
    Path((game, version)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<NoContent, Error> {
    api.origin.put_manifest(&game, &version, body).await?;
    Ok(NoContent)
}

async fn get_manifest(
    State(api): State<AppState>,
    headers: HeaderMap,
    Path((game, version)): Path<(String, String)>,
) -> Result<Response, Error> {
    let data = api
        .origin
        .get_manifest(&game, &version, is_pull(&headers))
        .await?;
    Ok(octets(data))
}

async fn delete_version(
    State(api): State<AppState>,
    _: ServerKey,
    Path((game, version)): Path<(String, String)>,
) -> Result<NoContent, Error> {
    api.origin.delete_version(&game, &version).await?;
    Ok(NoContent)
}

async fn list_versions(
    State(api): State<AppState>,
    Path(game): Path<String>,
) -> Result<Json<ContentVersions>, Error> {
    Ok(Json(api.origin.list_versions(&game).await?))
}

async fn collect(
    State(api): State<AppState>,
    _: ServerKey,
    Path(game): Path<String>,
) -> Result<Json<ContentCollected>, Error> {
    Ok(Json(api.origin.collect(&game).await?))
}

fn check_swarm(game: &str, version: &str) -> Result<(), Error> {
    check_name("game", game).map_err(OriginError::from)?;
    check_name("version", version).map_err(OriginError::from)?;
    Ok(())
}

/// The address is the one the node sees the request from, with the announced port.
async fn announce(
    State(api): State<AppState>,
    Player(me): Player,
    ClientAddr(from): ClientAddr,
    Path((game, version)): Path<(String, String)>,
    Body(req): Body<PeerAnnounce>,
) -> Result<Json<SwarmPeers>, Error> {
    check_swarm(&game, &version)?;
    if req.port == 0 {
        return Err(Error::bad_request("port must be 1-65535"));
    }
    // Swarms exist only for published versions: announces for made-up ones would fill the
    // tracker for everyone.
    if !api.origin.has_version(&game, &version).await? {
        return Err(Error::not_found(format!(
            "{game} has no version {version} to share"
        )));
    }
    let peer = volley_content::tracker::Peer {
        id: me,
        addr: std::net::SocketAddr::new(from.ip(), req.port),
        have_chunks: req.have_chunks,
        total_chunks: req.total_chunks,
        seen_ms: 0,
    };
    let now = crate::state::unix_ms();
    let peers = api
        .origin
        .tracker
        .announce(&game, &version, peer, now)
        .await
        .map_err(OriginError::from)?;
    Ok(Json(SwarmPeers {
        peers: peers
            .into_iter()
            .map(|p| SwarmPeer {
                player_id: p.id,
                addr: p.addr.to_string(),
                have_chunks: p.have_chunks,
                total_chunks: p.total_chunks,
            })
            .collect(),
    }))
}

async fn leave(
    State(api): State<AppState>,
    Player(me): Player,
    Path((game, version)): Path<(String, String)>,
) -> Result<NoContent, Error> {
    check_swarm(&game, &version)?;
    api.origin
        .tracker
        .leave(&game, &version, me)
        .await
        .map_err(OriginError::from)?;
    Ok(NoContent)
}
