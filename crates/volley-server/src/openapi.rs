//! The OpenAPI 3.0 document the node serves at `/v1/openapi.json`, built from the route table
//! in [`crate::api::ROUTES`] and the JSON schemas of the shared API types, so it cannot drift
//! from the types the handlers parse and return.

use schemars::gen::SchemaSettings;
use serde_json::{json, Map, Value};
use volley_proto::api;

fn schemas() -> Map<String, Value> {
    let mut gen = SchemaSettings::openapi3().into_generator();
    macro_rules! add {
        ($($t:ty => $name:literal),* $(,)?) => {{
            let mut named = Map::new();
            $(
                let s = gen.subschema_for::<$t>();
                named.insert($name.to_owned(), serde_json::to_value(s).unwrap_or(Value::Null));
            )*
            named
        }};
    }
    let named = add!(
        api::DeviceLogin => "DeviceLogin",
        api::EmailRegister => "EmailRegister",
        api::EmailLogin => "EmailLogin",
        api::CustomLogin => "CustomLogin",
        api::RefreshRequest => "RefreshRequest",
        api::Session => "Session",
        api::AccountInfo => "AccountInfo",
        api::LinkRequest => "LinkRequest",
        api::Friend => "Friend",
        Vec<api::Friend> => "FriendList",
        api::Presence => "Presence",
        api::CreateLobby => "CreateLobby",
        api::UpdateLobby => "UpdateLobby",
        api::LobbyInfo => "LobbyInfo",
        Vec<api::LobbyInfo> => "LobbyList",
        api::MemberRequest => "MemberRequest",
        api::SendChat => "SendChat",
        api::ChatMessage => "ChatMessage",
        api::ChatPage => "ChatPage",
        api::Event => "Event",
        api::CreateRoom => "CreateRoom",
        api::RoomInfo => "RoomInfo",
        api::JoinRoom => "JoinRoom",
        api::JoinTicket => "JoinTicket",
        api::ApiError => "ApiError",
        api::TicketRequest => "TicketRequest",
        api::TicketStatus => "TicketStatus",
        api::MatchResult => "MatchResult",
        api::RatingInfo => "RatingInfo",
        api::WalletView => "Wallet",
        Vec<api::TransferRecord> => "TransferList",
        api::Gift => "Gift",
        api::ChainResult => "ChainResult",
        api::RedeemRequest => "RedeemRequest",
        api::Redemption => "Redemption",
        Vec<api::StoreItem> => "StoreCatalogue",
        api::StoreItem => "StoreItem",
        api::PurchaseRequest => "PurchaseRequest",
        api::GrantRequest => "GrantRequest",
        api::MintItemRequest => "MintItemRequest",
        api::MintedItem => "MintedItem",
        api::BonusCode => "BonusCode",
        api::BoardDef => "BoardDef",
        api::ScoreRequest => "ScoreRequest",
        api::ScoreReply => "ScoreReply",
        Vec<api::BoardRecord> => "RecordList",
        api::RankReply => "RankReply",
        api::ChunkList => "ChunkList",
        api::ChunkBatchReply => "ChunkBatchReply",
        api::ContentVersions => "ContentVersions",
        api::ContentVersion => "ContentVersion",
        api::ContentCollected => "ContentCollected",
        api::PeerAnnounce => "PeerAnnounce",
        api::SwarmPeers => "SwarmPeers",
    );
    let mut all: Map<String, Value> = gen
        .definitions()
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect();
    for (k, v) in named {
        // A named entry that is only a reference to its own definition adds nothing.
        if v.get("$ref").and_then(Value::as_str) != Some(&format!("#/components/schemas/{k}")) {
            all.insert(k, v);
        }
    }
    let loose = |required: &[&str]| json!({"type": "object", "required": required, "additionalProperties": true});
    // Admin views kept loose: their rows are tuples and reports that may grow.
    all.insert(
        "HeldList".into(),
        json!({"type": "array", "items": {"type": "array", "description": "[id, account, score, reasons]"}}),
    );
    all.insert("AuditReport".into(), loose(&["accounts", "transfers"]));
    all.insert(
        "SetDisplayName".into(),
        json!({"type": "object", "required": ["display_name"], "additionalProperties": false,
               "properties": {"display_name": {"type": "string"}}}),
    );
    all
}

/// The document as JSON text.
pub(crate) fn document() -> String {
    let mut paths = Map::new();
    for r in crate::api::ROUTES {
        let mut op = Map::new();
        op.insert("summary".into(), r.summary.into());
        op.insert(
            "operationId".into(),
            format!("{}{}", r.method, r.path.replace(['/', '{', '}', '.'], "_")).into(),
        );
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        match r.auth {
            "bearer" => op.insert("security".into(), json!([{"bearer": []}])),
            "server" => op.insert("security".into(), json!([{"serverKey": []}])),
            _ => op.insert("security".into(), json!([])),
        };
        if let Some(req) = r.request {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{req}")}}}}),
            );
        }
        let ok = match r.response {
            Some(resp) => {
                json!({"description": "success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{resp}")}}}})
            }
            None => json!({"description": "success"}),
        };
        let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}});
        op.insert("responses".into(), json!({"200": ok, "default": err}));
        let entry = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(r.method.to_owned(), Value::Object(op));
        }
    }
    let doc = json!({
        "openapi": "3.0.3",
        "info": {"title": "Volley node API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Accounts, social, chat, matchmaking and rooms of a Volley node. Errors are ApiError bodies with stable codes."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "serverKey": {"type": "apiKey", "in": "header", "name": crate::api::SERVER_KEY_HEADER}
            }
        }
    });
    doc.to_string()
}
