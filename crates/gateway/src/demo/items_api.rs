//! The demo's items API: a small in-memory upstream that trusts only the identity
//! headers the gateway sets.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One item of the demo API.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    owner: String,
}

#[derive(Debug, Deserialize)]
struct NewItem {
    name: String,
}

#[derive(Default)]
struct Store {
    next_id: u64,
    items: BTreeMap<u64, Item>,
}

type Shared = Arc<Mutex<Store>>;

/// Starts the demo upstream on an ephemeral loopback port.
/// With `extra` routes (the dev IdP of `demo --login`) on the same server.
pub(super) async fn start_items_api(
    jwks: serde_json::Value,
    listener: tokio::net::TcpListener,
    extra: Option<axum::Router>,
) -> anyhow::Result<SocketAddr> {
    let mut store = Store {
        next_id: 1,
        ..Store::default()
    };
    for name in ["hammer", "anvil"] {
        let id = store.next_id;
        store.next_id += 1;
        store.items.insert(
            id,
            Item {
                id,
                name: name.into(),
                owner: "alice".into(),
            },
        );
    }
    let state: Shared = Arc::new(Mutex::new(store));
    let app = axum::Router::new()
        .route("/api/items", get(list).post(create))
        .route("/api/items/{id}", get(read).put(update).delete(remove))
        .route("/api/app", get(page).post(create_from_page))
        .route("/api/live", get(super::live::live))
        .route(
            "/api/public/status",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/api/partner/status",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/.well-known/jwks.json",
            get(move || async move { Json(jwks) }),
        )
        .layer(axum::middleware::map_response(
            |mut response: Response| async move {
                // Like many real APIs, the demo leaks its stack; the gateway removes these.
                let headers = response.headers_mut();
                headers.insert(
                    "server",
                    axum::http::HeaderValue::from_static("demo-items/1.0"),
                );
                headers.insert("x-powered-by", axum::http::HeaderValue::from_static("axum"));
                response
            },
        ))
        .with_state(state);
    let app = match extra {
        Some(extra) => app.merge(extra),
        None => app,
    };
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn owner(headers: &HeaderMap) -> String {
    headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_string()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": "no such item" })),
    )
        .into_response()
}

async fn list(State(state): State<Shared>) -> Response {
    let items: Vec<Item> = match state.lock() {
        Ok(store) => store.items.values().cloned().collect(),
        Err(_) => Vec::new(),
    };
    Json(items).into_response()
}

async fn create(
    State(state): State<Shared>,
    headers: HeaderMap,
    Json(new): Json<NewItem>,
) -> Response {
    let Ok(mut store) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let id = store.next_id;
    store.next_id += 1;
    let item = Item {
        id,
        name: new.name,
        owner: owner(&headers),
    };
    store.items.insert(id, item.clone());
    (StatusCode::CREATED, Json(item)).into_response()
}

async fn read(State(state): State<Shared>, Path(id): Path<u64>) -> Response {
    match state
        .lock()
        .ok()
        .and_then(|store| store.items.get(&id).cloned())
    {
        Some(item) => Json(item).into_response(),
        None => not_found(),
    }
}

async fn update(
    State(state): State<Shared>,
    Path(id): Path<u64>,
    Json(new): Json<NewItem>,
) -> Response {
    let Ok(mut store) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match store.items.get_mut(&id) {
        Some(item) => {
            item.name = new.name;
            Json(item.clone()).into_response()
        }
        None => not_found(),
    }
}

async fn remove(State(state): State<Shared>, Path(id): Path<u64>) -> Response {
    match state
        .lock()
        .ok()
        .and_then(|mut store| store.items.remove(&id))
    {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(),
    }
}

/// The browser UI of `demo --login`: the items, and a form to add one. No script, so the
/// gateway's strict CSP holds; the page only ever sees the identity headers the gateway set.
async fn page(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let items: Vec<Item> = match state.lock() {
        Ok(store) => store.items.values().cloned().collect(),
        Err(_) => Vec::new(),
    };
    let escape = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let rows: String = items
        .iter()
        .map(|i| {
            format!(
                "<li>{} <small>({})</small></li>",
                escape(&i.name),
                escape(&i.owner)
            )
        })
        .collect();
    axum::response::Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Items</title></head><body>\
<h1>Items</h1><p>Signed in as <strong id=\"user\">{}</strong> (through a Portcullis browser session).</p>\
<ul id=\"items\">{rows}</ul>\
<form method=\"post\" action=\"/api/app\"><input name=\"name\" id=\"name\" required maxlength=\"100\"> <button type=\"submit\" id=\"add\">Add</button></form>\
<form method=\"post\" action=\"/auth/logout\"><button type=\"submit\" id=\"logout\">Sign out</button></form></body></html>",
        escape(&owner(&headers))
    ))
    .into_response()
}

async fn create_from_page(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body);
    let Some(name) = portcullis::session::form::param(Some(&text), "name") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if let Ok(mut store) = state.lock() {
        let id = store.next_id;
        store.next_id += 1;
        store.items.insert(
            id,
            Item {
                id,
                name,
                owner: owner(&headers),
            },
        );
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert("location", axum::http::HeaderValue::from_static("/api/app"));
    response
}
