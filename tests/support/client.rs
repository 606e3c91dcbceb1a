//! The one way tests call the API, in either shape: [`Client`] sends a [`Request`] to the
//! service that serves its path and answers a [`Response`] (status, headers and body).
//! The typed helpers for the common calls are in [`super::calls`].

use nongsan::ServiceName;
use reqwest::{
    Method,
    header::{HeaderMap, HeaderName, HeaderValue},
};
use serde_json::Value;

use super::user::User;

/// The app's API as tests call it: every service at one address (in-process, or one
/// process), or each at its own (the split shape); a request goes to the service that
/// serves its path.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    listing: String,
    order: String,
    payment: String,
}

impl Client {
    /// Every service at `url`: the in-process app, one process, or any server.
    pub fn new(url: &str) -> Self {
        Self::split(url, url, url)
    }

    /// Each service at its own address.
    pub fn split(listing: &str, order: &str, payment: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            listing: listing.to_owned(),
            order: order.to_owned(),
            payment: payment.to_owned(),
        }
    }

    /// The full URL of `path`, at the service that serves it.
    pub fn url(&self, path: &str) -> String {
        let base = match ServiceName::serving(path) {
            ServiceName::Listing => &self.listing,
            ServiceName::Order => &self.order,
            ServiceName::Payment => &self.payment,
        };
        format!("{base}{path}")
    }

    /// Sends `req`; an error is a failure to get an answer at all (the server is away or
    /// died mid-request).
    pub async fn try_send(&self, req: Request) -> reqwest::Result<Response> {
        let mut headers = HeaderMap::new();
        headers.insert("accept-language", HeaderValue::from_static("en"));
        for (name, value) in &req.headers {
            headers.insert(
                HeaderName::try_from(name.as_str()).expect("a header name"),
                HeaderValue::try_from(value.as_str()).expect("a header value"),
            );
        }
        let mut builder = self
            .http
            .request(req.method, self.url(&req.path))
            .headers(headers);
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let res = builder.send().await?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await?.to_vec();
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Sends `req` and answers what came back, whatever its status.
    pub async fn send(&self, req: Request) -> Response {
        let what = format!("{} {}", req.method, self.url(&req.path));
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"))
    }

    /// GETs `path`, signed in as `who` or anonymously; answers (status, JSON body).
    pub async fn get(&self, path: &str, who: Option<&User>) -> (u16, Value) {
        self.send(Request::get(path).by_maybe(who)).await.parts()
    }

    /// POSTs `body` as JSON to `path`, signed in as `who` or anonymously; answers (status,
    /// JSON body).
    pub async fn post(&self, path: &str, who: Option<&User>, body: &Value) -> (u16, Value) {
        self.send(Request::post(path).by_maybe(who).json(body))
            .await
            .parts()
    }

    /// PATCHes `path` with `body` as `who`; answers (status, JSON body).
    pub async fn patch(&self, path: &str, who: &User, body: &Value) -> (u16, Value) {
        self.send(Request::patch(path).by(who).json(body))
            .await
            .parts()
    }
}

/// A request: method, path, headers and body. In English (`Accept-Language: en`) unless it
/// says otherwise.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Request {
    /// `method` on `path` (with its query), no headers, no body.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// A GET.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// A POST.
    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    /// A PUT.
    pub fn put(path: impl Into<String>) -> Self {
        Self::new(Method::PUT, path)
    }

    /// A PATCH.
    pub fn patch(path: impl Into<String>) -> Self {
        Self::new(Method::PATCH, path)
    }

    /// A DELETE.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }

    /// Sets a header, replacing one of the same name.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Signed in as `user`: its bearer token, and `X-On-Behalf-Of` when it acts for a
    /// household.
    pub fn by(self, user: &User) -> Self {
        let req = self.header("authorization", &format!("Bearer {}", user.token));
        match &user.on_behalf_of {
            Some(household) => req.header(nongsan_shared::auth::ON_BEHALF_OF_HEADER, household),
            None => req,
        }
    }

    /// Signed in as `user` when there is one, else anonymous.
    pub fn by_maybe(self, user: Option<&User>) -> Self {
        match user {
            Some(user) => self.by(user),
            None => self,
        }
    }

    /// `body` as JSON.
    pub fn json(self, body: &Value) -> Self {
        self.body("application/json", serde_json::to_vec(body).expect("JSON"))
    }

    /// `bytes` as the body, of `content_type`.
    pub fn body(mut self, content_type: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Some(bytes.into());
        self.header("content-type", content_type)
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body, as sent.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON; `null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value, if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// (status, JSON body).
    pub fn parts(&self) -> (u16, Value) {
        (self.status, self.json())
    }
}

#[test]
fn a_split_client_sends_each_path_to_the_service_that_serves_it() {
    let api = Client::split("http://l", "http://o", "http://p");
    for (path, url) in [
        ("/v1/listings/1/stock", "http://l/v1/listings/1/stock"),
        (
            "/v1/internal/reservations",
            "http://l/v1/internal/reservations",
        ),
        ("/v1/search?q=xoai", "http://l/v1/search?q=xoai"),
        ("/healthz", "http://l/healthz"),
        ("/v1/checkouts", "http://o/v1/checkouts"),
        (
            "/v1/orders?seller_kind=household",
            "http://o/v1/orders?seller_kind=household",
        ),
        ("/v1/orders/1/confirm", "http://o/v1/orders/1/confirm"),
        (
            "/v1/ops/order/dead-letters",
            "http://o/v1/ops/order/dead-letters",
        ),
        (
            "/v1/payments/vnpay/ipn?a=1",
            "http://p/v1/payments/vnpay/ipn?a=1",
        ),
        ("/v1/internal/payments", "http://p/v1/internal/payments"),
        ("/v1/ordersomething", "http://l/v1/ordersomething"),
    ] {
        assert_eq!(api.url(path), url, "{path}");
    }
}
