//! DNS: the pure answer path ([`answer`], [`wire`]), the listeners around it ([`server`]),
//! zone transfers and NOTIFY, off the hot path ([`transfer`]); [`text`] reads responses back
//! for people.

pub mod answer;
pub mod batch;
pub mod forward;
pub mod server;
pub mod text;
pub mod transfer;
pub mod wire;
