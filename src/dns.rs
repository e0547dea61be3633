//! DNS: the pure answer path ([`answer`], [`wire`]), the listeners around it ([`server`]) and
//! zone transfers and NOTIFY, off the hot path ([`transfer`]).

pub mod answer;
pub mod batch;
pub mod forward;
pub mod server;
pub mod transfer;
pub mod wire;
