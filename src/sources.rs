//! Where entries come from. Each source sends its complete current entry set to the
//! registry whenever it changes.

pub mod files;
