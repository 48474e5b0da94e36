//! Who is calling: API keys sent as `Authorization: Bearer <key>`, each with a role.
//!
//! - A *customer* key is bound to one customer id: it places orders for that customer only and
//!   reads only that customer's orders (another customer's order is a 404, so a key cannot
//!   learn which order ids exist).
//! - An *admin* key reads everything, places orders for any customer (back office, load tests)
//!   and uses the admin endpoints.
//!
//! Keys are configured as SHA-256 digests, never as the keys themselves: `admin:<hex>` and
//! `customer:<customer id>:<hex>`, separated by commas or newlines (`#` starts a comment). A key
//! is 256 random bits, so a plain SHA-256 is as strong as a password hash would be and costs
//! microseconds per request (a deliberately slow hash would hand an attacker a cheap way to burn
//! CPU). The presented key's digest is compared with every configured digest in constant time.
//! Neither keys nor digests are ever logged: a caller is named by its key id, the first 12 hex
//! digits of the digest. Failed authentications are counted, logged and throttled per client
//! address ([`super::failed_auth`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::failed_auth::{FailedAuth, Failure};
use super::limits::RateLimit;
use super::problem::AppError;
use crate::domain::CustomerId;

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Admin,
    Customer(CustomerId),
}

/// The authenticated caller, put in the request's extensions by [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Names the key in logs, metrics labels (never) and the audit trail: not a secret.
    pub key_id: String,
    pub role: Role,
}

impl Principal {
    /// The caller in open mode (no keys): everything is allowed.
    pub fn open() -> Self {
        Self { key_id: "open".to_owned(), role: Role::Admin }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// May this caller see or act for `customer_id`?
    pub fn may_act_for(&self, customer_id: &str) -> bool {
        match &self.role {
            Role::Admin => true,
            Role::Customer(own) => own.as_str() == customer_id,
        }
    }

    /// The customer this caller is bound to, if any.
    pub fn customer(&self) -> Option<&CustomerId> {
        match &self.role {
            Role::Admin => None,
            Role::Customer(own) => Some(own),
        }
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.is_admin() { Ok(()) } else { Err(AppError::Forbidden("this endpoint needs an admin key".to_owned())) }
    }
}

/// Handlers take the caller as an argument; a route without the auth layer fails closed (401).
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or(AppError::Unauthorized { invalid_key: false })
    }
}

/// One configured key: its role and the SHA-256 digest of the key.
#[derive(Clone)]
struct Entry {
    role: Role,
    digest: [u8; 32],
}

/// The configured keys. `Debug` shows how many keys of each role, never a digest.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Arc<Vec<Entry>>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let admins = self.entries.iter().filter(|e| e.role == Role::Admin).count();
        f.debug_struct("ApiKeys").field("admin", &admins).field("customer", &(self.entries.len() - admins)).finish()
    }
}

/// Why the key configuration is invalid. Never quotes an entry: a key pasted where its digest
/// belongs must not end up in a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyConfigError {
    #[error("API key entry {entry}: {reason}")]
    Entry { entry: usize, reason: String },
}

impl ApiKeys {
    /// Parse `admin:<sha256 hex>` and `customer:<customer id>:<sha256 hex>` entries, separated
    /// by commas or newlines; blank entries and `#` comments (to the end of the line) are
    /// skipped.
    pub fn parse(text: &str) -> Result<Self, KeyConfigError> {
        let mut entries = Vec::new();
        let lines = text.lines().map(|line| line.split_once('#').map_or(line, |(before, _)| before));
        for (i, raw) in lines.flat_map(|line| line.split(',')).map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let fail = |reason: &str| KeyConfigError::Entry { entry: i + 1, reason: reason.to_owned() };
            let (head, hex_digest) =
                raw.rsplit_once(':').ok_or_else(|| fail("expected admin:<sha256> or customer:<id>:<sha256>"))?;
            let digest = parse_digest(hex_digest).ok_or_else(|| {
                fail(
                    "expected the key's SHA-256 digest as 64 hex digits (configure digests, never the keys themselves)",
                )
            })?;
            let role = match head.split_once(':') {
                None if head == "admin" => Role::Admin,
                Some(("customer", id)) => Role::Customer(
                    CustomerId::parse(id.trim())
                        .map_err(|err| fail(&format!("invalid customer id: {}", err.message())))?,
                ),
                _ => return Err(fail("the role must be admin or customer:<id>")),
            };
            entries.push(Entry { role, digest });
        }
        Ok(Self { entries: Arc::new(entries) })
    }

    /// Keys in code (demo keys, tests): each with its role.
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = (&'a str, Role)>) -> Self {
        let entries = keys.into_iter().map(|(key, role)| Entry { role, digest: digest(key) }).collect();
        Self { entries: Arc::new(entries) }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Is `key` one of the configured keys (whatever its role)?
    pub fn accepts(&self, key: &str) -> bool {
        self.authenticate(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The caller a presented key stands for, if it is one of ours. Every configured digest is
    /// compared, each in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let wanted = digest(presented);
        let mut found = None;
        for entry in self.entries.iter() {
            if bool::from(entry.digest.ct_eq(&wanted)) && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|entry| Principal { key_id: key_id(&entry.digest), role: entry.role.clone() })
    }
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn key_id(digest: &[u8; 32]) -> String {
    format!("key-{}", &hex::encode(digest)[..12])
}

/// The compose stack's published demo admin key. Its digest is refused in the configured keys
/// unless `ORDER_API_ALLOW_DEMO_KEY=true` (see [`crate::api_from_env`]): anyone who read the
/// repository holds it.
pub const PUBLISHED_DEMO_KEY: &str = "sk_demo_compose_admin_change_me";

/// The SHA-256 digest of a key, as configured (`printf %s "$KEY" | sha256sum` gives the same).
pub fn hash_key(key: &str) -> String {
    hex::encode(digest(key))
}

/// A new random key: `sk_` and 64 hex digits (256 bits from the OS's generator).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("sk_{}", hex::encode(bytes))
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No authentication: every caller is an admin. Only for demos on a trusted machine; it must
    /// be asked for explicitly (`ORDER_API_AUTH=open`).
    Open,
    /// Every request needs one of these keys.
    Keys(ApiKeys),
}

/// The longest `Authorization` value looked at; anything longer is not one of our keys.
const MAX_CREDENTIALS_LEN: usize = 512;

/// The bearer token of an `Authorization` header: `Ok(None)` when there is none.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || AppError::Unauthorized { invalid_key: true };
    let text = value.to_str().map_err(|_| invalid())?;
    if text.len() > MAX_CREDENTIALS_LEN {
        return Err(invalid());
    }
    let (scheme, token) = text.trim().split_once(' ').ok_or_else(invalid)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(invalid());
    }
    Ok(Some(token))
}

/// How requests are authenticated, and what failures cost.
#[derive(Debug)]
pub struct Authenticator {
    auth: Auth,
    failures: FailedAuth,
}

impl Authenticator {
    /// `failure_limit`: failed authentications allowed per second and in a burst, per client
    /// address (`None`: counted and logged, never throttled).
    pub fn new(auth: Auth, failure_limit: Option<RateLimit>) -> Self {
        Self { auth, failures: FailedAuth::new(failure_limit) }
    }

    /// The caller `headers` name, or why not. `client` is the connecting address.
    fn resolve(&self, headers: &HeaderMap, client: Option<std::net::IpAddr>) -> Result<Principal, AppError> {
        let Auth::Keys(keys) = &self.auth else {
            return Ok(Principal::open());
        };
        let now = Instant::now();
        if let Some(retry_after_secs) = self.failures.blocked(client, now) {
            self.failures.record(client, Failure::Throttled, now);
            return Err(AppError::AuthThrottled { retry_after_secs });
        }
        let failure = match bearer_token(headers) {
            Ok(Some(token)) => match keys.authenticate(token) {
                Some(principal) => return Ok(principal),
                None => Failure::UnknownKey,
            },
            Ok(None) => Failure::MissingKey,
            Err(_) => Failure::Malformed,
        };
        self.failures.record(client, failure, now);
        Err(AppError::Unauthorized { invalid_key: failure != Failure::MissingKey })
    }
}

/// Middleware: resolve the caller (401 when there is no key or it is not one of ours, 429 when
/// the client address failed too often) and put its [`Principal`] in the request's extensions
/// and its key id on the request's span (`enduser.id`).
pub async fn authenticate(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
    match authenticator.resolve(request.headers(), client) {
        Ok(principal) => {
            tracing::Span::current().record("enduser.id", principal.key_id.as_str());
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn keys() -> (ApiKeys, String, String) {
        let (admin, customer) = (generate_key(), generate_key());
        let text = format!("# ops\nadmin:{}\ncustomer:cust-rich:{}, ,\n", hash_key(&admin), hash_key(&customer));
        (ApiKeys::parse(&text).expect("valid"), admin, customer)
    }

    #[test]
    fn a_configured_key_authenticates_with_its_role_and_a_key_id() {
        let (keys, admin, customer) = keys();
        let a = keys.authenticate(&admin).expect("admin");
        assert!(a.is_admin());
        assert_eq!(a.key_id, format!("key-{}", &hash_key(&admin)[..12]));
        let c = keys.authenticate(&customer).expect("customer");
        assert_eq!(c.customer().map(CustomerId::as_str), Some("cust-rich"));
        assert!(c.may_act_for("cust-rich") && !c.may_act_for("cust-poor"));
        assert!(keys.authenticate(&generate_key()).is_none());
        assert!(keys.authenticate(&hash_key(&admin)).is_none(), "the digest is not a key");
    }

    #[test]
    fn configuration_errors_never_quote_the_entry() {
        let key = generate_key();
        for text in [format!("admin:{key}"), key.clone(), format!("root:{}", hash_key(&key)), "customer::ab".to_owned()]
        {
            let err = ApiKeys::parse(&text).expect_err("invalid");
            assert!(!err.to_string().contains(&key), "{err}");
        }
        let padded = ApiKeys::parse(&format!("customer: padded-id :{}", hash_key(&key))).expect("spaces around parts");
        assert_eq!(
            padded.authenticate(&key).and_then(|p| p.customer().map(|c| c.as_str().to_owned())).as_deref(),
            Some("padded-id")
        );
    }

    #[test]
    fn debug_shows_counts_not_digests() {
        let (keys, admin, _) = keys();
        let shown = format!("{keys:?}");
        assert_eq!(shown, "ApiKeys { admin: 1, customer: 1 }");
        assert!(!shown.contains(&hash_key(&admin)[..12]));
    }

    #[test]
    fn generated_keys_are_distinct_and_hash_like_sha256sum() {
        assert_ne!(generate_key(), generate_key());
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_anything_else_is_invalid() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(bearer_token(&with("Bearer abc")).ok().flatten(), Some("abc"));
        assert_eq!(bearer_token(&with("bearer  abc ")).ok().flatten(), Some("abc"));
        for bad in ["Basic YWJj", "Bearer", "Bearer ", "abc"] {
            assert!(bearer_token(&with(bad)).is_err(), "{bad}");
        }
        assert!(matches!(bearer_token(&HeaderMap::new()), Ok(None)));
    }

    proptest! {
        #[test]
        fn the_key_configuration_parser_never_panics_and_accepts_only_digests(text in "\\PC{0,200}") {
            if let Ok(keys) = ApiKeys::parse(&text) {
                prop_assert!(keys.len() <= text.matches(':').count());
            }
        }

        #[test]
        fn any_authorization_header_is_parsed_without_panicking(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(value) = axum::http::HeaderValue::from_bytes(&raw) {
                let mut headers = HeaderMap::new();
                headers.insert(header::AUTHORIZATION, value);
                if let Ok(Some(token)) = bearer_token(&headers) {
                    prop_assert!(!token.is_empty() && token.len() <= MAX_CREDENTIALS_LEN);
                }
            }
        }

        #[test]
        fn a_key_authenticates_only_itself(a in "[ -~]{1,80}", b in "[ -~]{1,80}") {
            let keys = ApiKeys::from_keys([(a.as_str(), Role::Admin)]);
            prop_assert!(keys.authenticate(&a).is_some());
            prop_assert_eq!(keys.authenticate(&b).is_some(), a == b);
        }
    }
}
