//! Integration tests: the real server on 127.0.0.1 ports, real clients (hickory, dig, kdig).
#![allow(missing_docs)]
//! One binary, as hickory-dns does, so the crate links once.

mod config;
mod kubeapi;
mod support;
mod upstream;

mod abuse;
mod admin;
mod clusters;
mod command_line;
mod deploy;
mod deploy_transfer;
mod dns_over_sockets;
mod entry_files;
mod fixtures;
mod forwarding;
mod kubectl;
mod listen;
mod monitoring;
mod peers;
mod records;
mod transfer;
mod transfer_gate;
mod truncation;
