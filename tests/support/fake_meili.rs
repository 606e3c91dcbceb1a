//! A stand-in for Meilisearch that records every request and answers as Meilisearch's API
//! does (task info, finished tasks, stats, search results), so the adapter's settings,
//! filters and sorts can be checked request by request.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// One request the adapter sent.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Method.
    pub method: Method,
    /// Path.
    pub path: String,
    /// JSON body, or Null.
    pub body: Value,
    /// Headers.
    pub headers: axum::http::HeaderMap,
}

/// What the fake holds.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Every request, in order.
    pub exchanges: Vec<Exchange>,
    /// Documents added, by id.
    pub documents: Vec<Value>,
    next_task: u32,
}

/// A running fake.
#[derive(Debug, Clone)]
pub struct FakeMeili {
    /// Its base URL.
    pub url: String,
    /// What it saw.
    pub state: Arc<Mutex<FakeState>>,
}

const AT: &str = "2026-11-27T10:00:00.000000Z";

/// A task enqueued, as Meilisearch answers a write.
fn task(s: &mut FakeState, index_uid: &str, kind: &str) -> Response {
    s.next_task += 1;
    let info = json!({ "taskUid": s.next_task, "indexUid": index_uid, "status": "enqueued", "type": kind, "enqueuedAt": AT });
    (StatusCode::ACCEPTED, axum::Json(info)).into_response()
}

async fn answer(State(state): State<Arc<Mutex<FakeState>>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), 10 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut s = state.lock().unwrap();
    s.exchanges.push(Exchange {
        method: method.clone(),
        path: path.clone(),
        body: body.clone(),
        headers,
    });
    // Answered by the API's own path, after any prefix a proxy in front would add.
    let route = ["/indexes/", "/tasks/"]
        .iter()
        .filter_map(|r| path.find(r))
        .min()
        .map_or(path.as_str(), |at| &path[at..]);
    let index_uid = route
        .strip_prefix("/indexes/")
        .and_then(|p| p.split('/').next())
        .unwrap_or("")
        .to_owned();
    match (method.as_str(), route) {
        ("PATCH", p) if p.ends_with("/settings") => task(&mut s, &index_uid, "settingsUpdate"),
        ("POST" | "PUT", p) if p.ends_with("/documents") => {
            let docs = body.as_array().cloned().unwrap_or_default();
            s.documents.extend(docs);
            task(&mut s, &index_uid, "documentAdditionOrUpdate")
        }
        ("DELETE", p) if p.ends_with("/documents") => {
            s.documents.clear();
            task(&mut s, &index_uid, "documentDeletion")
        }
        ("GET", p) if p.starts_with("/tasks/") => {
            let uid: u32 = p.trim_start_matches("/tasks/").parse().unwrap_or(0);
            axum::Json(json!({
                "uid": uid, "indexUid": "listings", "status": "succeeded", "type": "settingsUpdate", "details": {},
                "duration": "PT0.001S", "enqueuedAt": AT, "startedAt": AT, "finishedAt": AT, "canceledBy": null, "error": null
            }))
            .into_response()
        }
        ("GET", p) if p.ends_with("/stats") => axum::Json(json!({
            "numberOfDocuments": s.documents.len(), "numberOfEmbeddedDocuments": 0, "numberOfEmbeddings": 0,
            "rawDocumentDbSize": 0, "avgDocumentSize": 0, "isIndexing": false, "fieldDistribution": {}
        }))
        .into_response(),
        ("POST", p) if p.ends_with("/search") => {
            let hits: Vec<Value> = s.documents.iter().take(1).cloned().collect();
            axum::Json(json!({
                "hits": hits, "query": body["q"], "processingTimeMs": 1, "hitsPerPage": body["hitsPerPage"], "page": body["page"],
                "totalPages": 1, "totalHits": hits.len(), "facetDistribution": { "category": { "trai-cay-dac-san": hits.len() } }
            }))
            .into_response()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({ "message": "not in the fake", "code": "not_found", "type": "invalid_request", "link": "" }))).into_response(),
    }
}

impl FakeMeili {
    /// Starts the fake on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener).await
    }

    /// Starts the fake on a port the app was told about while nothing listened there.
    pub async fn start_on(port: super::ClosedPort) -> Self {
        Self::serve(port.listen()).await
    }

    async fn serve(listener: tokio::net::TcpListener) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(FakeState::default()));
        let router = Router::new().fallback(answer).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, state }
    }

    /// The requests so far matching a method and a path suffix.
    pub fn requests(&self, method: &str, suffix: &str) -> Vec<Exchange> {
        self.state
            .lock()
            .unwrap()
            .exchanges
            .iter()
            .filter(|e| e.method.as_str() == method && e.path.ends_with(suffix))
            .cloned()
            .collect()
    }
}
