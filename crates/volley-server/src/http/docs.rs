//! The OpenAPI document, generated from the router (aide) and finished here: security schemes,
//! path parameters named by the route itself, operation ids. Served at `/v1/openapi.json`.

use aide::axum::ApiRouter;
use aide::openapi::{Info, OpenApi};
use serde_json::{json, Value};

use super::extract::SERVER_KEY_HEADER;
use super::AppState;

/// The served document, as JSON text.
#[derive(Debug)]
pub(crate) struct Document(pub(crate) String);

/// Sets up document generation on this thread. Must run before the routes are declared: the
/// settings reset the schemas collected so far.
pub(super) fn prepare() {
    aide::generate::on_error(|e| tracing::debug!(error = %e, "OpenAPI generation"));
    aide::generate::extract_schemas(true);
    aide::generate::infer_responses(true);
}

/// Turns the documented routes into a plain router and the document describing them.
pub(super) fn finish(routes: ApiRouter<AppState>) -> (axum::Router<AppState>, Document) {
    let mut api = OpenApi {
        info: Info {
            title: "Volley node API".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: Some(
                "Accounts, social, chat, matchmaking, economy, leaderboards, rooms and content \
                 of a Volley node. Every error is an ApiError body with a stable code."
                    .into(),
            ),
            ..Info::default()
        },
        ..OpenApi::default()
    };
    let router = routes.finish_api(&mut api);
    let mut doc = serde_json::to_value(&api).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document does not serialize");
        Value::Null
    });
    finish_value(&mut doc);
    (router, Document(doc.to_string()))
}

/// Adds what the router cannot know: the security schemes, a parameter for each `{name}` of a
/// path (typed as a string unless an extractor described it), and stable operation ids.
fn finish_value(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "A session token from /v1/auth/*"},
        "serverKey": {"type": "apiKey", "in": "header", "name": SERVER_KEY_HEADER,
                      "description": "The node's server key, for the game's own servers"}
    });
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let names: Vec<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let Some(methods) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in methods.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            op.entry("operationId").or_insert_with(|| {
                format!("{method}{}", path.replace(['/', '{', '}', '.', '-'], "_")).into()
            });
            op.entry("security").or_insert_with(|| json!([]));
            let params = op
                .entry("parameters")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(params) = params {
                for name in &names {
                    let present = params
                        .iter()
                        .any(|p| p["in"] == "path" && p["name"] == *name);
                    if !present {
                        params.push(json!({"name": name, "in": "path", "required": true,
                                           "schema": {"type": "string"}}));
                    }
                }
                if params.is_empty() {
                    op.remove("parameters");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn document() -> Value {
        prepare();
        let (_, doc) = finish(super::super::api_routes());
        serde_json::from_str(&doc.0).unwrap()
    }

    /// Every `$ref` names a schema the document defines, every `{name}` in a path is a
    /// parameter, and every operation says how it authenticates.
    #[test]
    fn the_document_is_complete() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            assert!(schemas.contains_key(&name), "missing schema {name}");
        }
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 50, "{} paths", paths.len());
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                assert!(op["summary"].is_string(), "{method} {path} has no summary");
                assert!(op["security"].is_array(), "{method} {path}");
                for seg in path.split('/').filter(|s| s.starts_with('{')) {
                    let name = &seg[1..seg.len() - 1];
                    assert!(
                        op["parameters"]
                            .as_array()
                            .is_some_and(|ps| ps.iter().any(|p| p["name"] == name)),
                        "{method} {path} lacks parameter {name}"
                    );
                }
            }
        }
        let login = &doc["paths"]["/v1/auth/device"]["post"];
        assert_eq!(login["security"], json!([]));
        assert!(login["requestBody"].to_string().contains("DeviceLogin"));
        let wallet = &doc["paths"]["/v1/wallet"]["get"];
        assert_eq!(wallet["security"], json!([{"bearer": []}]));
        let ban = &doc["paths"]["/v1/admin/accounts/{id}/ban"]["post"];
        assert_eq!(ban["security"], json!([{"serverKey": []}]));
    }
}
