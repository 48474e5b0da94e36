//! What the order API's black-box tests share: in-memory repositories (orders and admin
//! commands), a broken one, a blocking one, test keys, and request helpers. Requests carry the
//! admin key unless a helper says otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{TimeDelta, Utc};
use order_svc::domain::admin_command::{AdminCommand, CommandStatus};
use order_svc::domain::{self, OrderEvent, OrderState};
use order_svc::http::{self, ApiConfig, ApiKeys, ApiLimits, Auth, Role};
use order_svc::storage::{
    AdminCommandPage, AdminCommandView, AdminRepository, CommandQuery, Cursor, IdempotencyRequest, ListQuery,
    OrderPage, OrderRepository, OrderSummary, OrderView, Placed, RepoError,
};
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

pub const ADMIN_KEY: &str = "sk_test_admin_0123456789abcdef";
pub const RICH_KEY: &str = "sk_test_rich_0123456789abcdef";
pub const POOR_KEY: &str = "sk_test_poor_0123456789abcdef";

/// The test keys: an admin, and customer keys for `cust-rich` and `cust-poor`.
pub fn test_keys() -> ApiKeys {
    let customer = |id: &str| Role::Customer(domain::CustomerId::parse(id).expect("customer id"));
    ApiKeys::from_keys([(ADMIN_KEY, Role::Admin), (RICH_KEY, customer("cust-rich")), (POOR_KEY, customer("cust-poor"))])
}

/// The test keys with no rate limit (tests of the limits set their own).
pub fn api_config() -> ApiConfig {
    ApiConfig { auth: Auth::Keys(test_keys()), limits: ApiLimits { rate: None, ..ApiLimits::default() } }
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

// ---- an in-memory repository ----

#[derive(Default)]
pub struct Store {
    pub orders: BTreeMap<Uuid, OrderState>,
    pub idempotency: HashMap<String, (String, Uuid)>,
}

#[derive(Clone, Default)]
pub struct InMemoryRepo {
    pub store: Arc<Mutex<Store>>,
}

impl InMemoryRepo {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an upstream fact as the order-svc handler would.
    pub fn observe(&self, id: Uuid, fact: OrderEvent) {
        let mut store = self.store();
        let state = store.orders.get_mut(&id).expect("order exists");
        let events = domain::observe(state, fact).expect("valid fact");
        for event in &events {
            state.apply(event, Utc::now());
        }
    }
}

impl OrderRepository for InMemoryRepo {
    async fn place(
        &self,
        cmd: domain::PlaceOrder,
        idempotency: Option<IdempotencyRequest>,
    ) -> Result<Placed, RepoError> {
        let mut store = self.store();
        let previous = idempotency.as_ref().and_then(|request| {
            let (fingerprint, id) = store.idempotency.get(request.key.as_str())?;
            Some((*fingerprint == request.body_fingerprint, *id))
        });
        match previous {
            Some((false, _)) => return Err(RepoError::IdempotencyConflict),
            Some((true, id)) => {
                let view = OrderView::from(&store.orders[&id]);
                return Ok(Placed { view, replayed: true });
            }
            None => {}
        }
        let id = Uuid::now_v7();
        let now = Utc::now();
        let events = domain::place(cmd, id, now, TimeDelta::seconds(30));
        let state = domain::fold(events.iter().map(|e| (e, now)))
            .ok_or_else(|| anyhow::anyhow!("place did not open the stream"))?;
        let view = OrderView::from(&state);
        store.orders.insert(id, state);
        if let Some(request) = idempotency {
            store.idempotency.insert(request.key.as_str().to_owned(), (request.body_fingerprint, id));
        }
        Ok(Placed { view, replayed: false })
    }

    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, RepoError> {
        Ok(self.store().orders.get(&id).map(OrderView::from))
    }

    async fn list(&self, q: ListQuery) -> Result<OrderPage, RepoError> {
        let store = self.store();
        let limit = q.limit.get() as usize;
        let mut matching = store
            .orders
            .values()
            .rev()
            .filter(|o| q.cursor.is_none_or(|c| o.order_id() < c.last_id()))
            .filter(|o| q.customer_id.as_ref().is_none_or(|c| c.as_str() == o.customer_id()))
            .filter(|o| q.status.is_none_or(|s| s == o.status()))
            .take(limit + 1)
            .map(OrderSummary::from)
            .collect::<Vec<_>>();
        let next_cursor = if matching.len() > limit {
            matching.truncate(limit);
            matching.last().map(|o| Cursor::after(o.id))
        } else {
            None
        };
        Ok(OrderPage { items: matching, next_cursor })
    }
}

/// A repository whose database is down, with secrets in its error messages.
#[derive(Clone)]
pub struct BrokenRepo;

pub fn broken() -> RepoError {
    RepoError::Internal(
        anyhow::anyhow!("connection refused: postgres://orders:hunter2@db").context("failed to append events"),
    )
}

impl OrderRepository for BrokenRepo {
    async fn place(&self, _: domain::PlaceOrder, _: Option<IdempotencyRequest>) -> Result<Placed, RepoError> {
        Err(broken())
    }

    async fn get(&self, _: Uuid) -> Result<Option<OrderView>, RepoError> {
        Err(broken())
    }

    async fn list(&self, _: ListQuery) -> Result<OrderPage, RepoError> {
        Err(broken())
    }
}

// ---- an in-memory admin repository ----

#[derive(Clone, Default)]
pub struct InMemoryAdmin {
    pub commands: Arc<Mutex<BTreeMap<Uuid, AdminCommandView>>>,
}

impl InMemoryAdmin {
    pub fn all(&self) -> Vec<AdminCommandView> {
        self.commands.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

impl AdminRepository for InMemoryAdmin {
    async fn issue(&self, command: AdminCommand, issued_by: String) -> Result<AdminCommandView, RepoError> {
        let now = Utc::now();
        let view = AdminCommandView {
            id: Uuid::now_v7(),
            command_type: command.command_type().to_owned(),
            service: command.service().to_owned(),
            target: command.target().to_owned(),
            status: CommandStatus::Pending,
            request: command.request().map_err(|e| RepoError::Internal(e.into()))?,
            events: Vec::new(),
            reason: None,
            issued_by,
            issued_at: now,
            updated_at: now,
        };
        self.commands.lock().unwrap_or_else(|p| p.into_inner()).insert(view.id, view.clone());
        Ok(view)
    }

    async fn command(&self, id: Uuid) -> Result<Option<AdminCommandView>, RepoError> {
        Ok(self.commands.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned())
    }

    async fn commands(&self, q: CommandQuery) -> Result<AdminCommandPage, RepoError> {
        let limit = q.limit.get() as usize;
        let mut items: Vec<AdminCommandView> = self
            .all()
            .into_iter()
            .rev()
            .filter(|c| q.cursor.is_none_or(|cursor| c.id < cursor.last_id()))
            .filter(|c| q.status.is_none_or(|s| s == c.status))
            .take(limit + 1)
            .collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|c| Cursor::after(c.id))
        } else {
            None
        };
        Ok(AdminCommandPage { items, next_cursor })
    }
}

/// A repository whose `get` waits until the test lets it go, and says when it started waiting:
/// a request held open for as long as a test needs, without timing.
#[derive(Clone)]
pub struct HeldRepo {
    pub entered: Arc<tokio::sync::Notify>,
    pub release: Arc<tokio::sync::Semaphore>,
}

impl Default for HeldRepo {
    fn default() -> Self {
        Self { entered: Arc::default(), release: Arc::new(tokio::sync::Semaphore::new(0)) }
    }
}

impl OrderRepository for HeldRepo {
    async fn place(&self, _: domain::PlaceOrder, _: Option<IdempotencyRequest>) -> Result<Placed, RepoError> {
        Err(broken())
    }

    async fn get(&self, _: Uuid) -> Result<Option<OrderView>, RepoError> {
        self.entered.notify_one();
        // Each permit the test adds lets exactly one request go.
        self.release.acquire().await.map_err(|e| RepoError::Internal(e.into()))?.forget();
        Ok(None)
    }

    async fn list(&self, _: ListQuery) -> Result<OrderPage, RepoError> {
        Ok(OrderPage { items: Vec::new(), next_cursor: None })
    }
}

// ---- helpers ----

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status.
    pub fn assert_problem(&self, status: StatusCode) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.content_type(), "application/problem+json");
        assert_eq!(self.body["status"], status.as_u16());
        assert!(self.body["type"].is_string(), "type: {}", self.body);
        assert!(self.body["title"].is_string(), "title: {}", self.body);
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    Reply { status, headers, body }
}

pub fn post_json(body: &Value) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/orders")
        .header(header::AUTHORIZATION, bearer(ADMIN_KEY))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

pub fn post_raw(content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder =
        Request::builder().method(Method::POST).uri("/orders").header(header::AUTHORIZATION, bearer(ADMIN_KEY));
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).expect("request")
}

pub fn post_with_key(key: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/orders")
        .header(header::AUTHORIZATION, bearer(ADMIN_KEY))
        .header(header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", key)
        .body(Body::from(body.to_string()))
        .expect("request")
}

pub fn get(uri: &str) -> Request<Body> {
    get_as(ADMIN_KEY, uri)
}

/// `GET uri` with `key` (an empty key sends no `Authorization` header).
pub fn get_as(key: &str, uri: &str) -> Request<Body> {
    let mut builder = Request::builder().uri(uri);
    if !key.is_empty() {
        builder = builder.header(header::AUTHORIZATION, bearer(key));
    }
    builder.body(Body::empty()).expect("request")
}

/// A JSON request with `key` (an empty key sends no `Authorization` header).
pub fn json_as(key: &str, method: Method, uri: &str, body: &Value) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json");
    if !key.is_empty() {
        builder = builder.header(header::AUTHORIZATION, bearer(key));
    }
    builder.body(Body::from(body.to_string())).expect("request")
}

pub fn order_body() -> Value {
    json!({
        "customer_id": "cust-rich",
        "items": [{"sku": "sku-tee", "quantity": 2}],
        "ship_to": {"country": "NL"}
    })
}

pub fn order_for(customer: &str) -> Value {
    let mut body = order_body();
    body["customer_id"] = json!(customer);
    body
}

pub fn app() -> (Router, InMemoryRepo) {
    let repo = InMemoryRepo::default();
    (http::router(repo.clone(), InMemoryAdmin::default(), &api_config()), repo)
}

pub async fn place(app: &Router, body: &Value) -> Uuid {
    let reply = send(app, post_json(body)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    reply.body["id"].as_str().and_then(|id| id.parse().ok()).expect("an id")
}
