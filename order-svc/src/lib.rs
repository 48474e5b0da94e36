//! order-svc: the order aggregate (the saga's authority on an order's fate) and the public
//! order API.

pub mod domain;
pub mod http;
