//! DNS: the pure answer path ([`answer`], [`wire`]) and the listeners around it ([`server`]).

pub mod answer;
pub mod batch;
pub mod forward;
pub mod server;
pub mod wire;
