//! DNS: the pure answer path ([`answer`], [`wire`]) and the listeners around it ([`server`]);
//! [`text`] reads responses back for people.

pub mod answer;
pub mod batch;
pub mod forward;
pub mod server;
pub mod text;
pub mod wire;
