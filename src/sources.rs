//! Where entries come from. Each source sends its complete current entry set to the
//! registry whenever it changes.

pub mod cluster;
pub mod files;
pub mod remote_secrets;
pub mod state;
