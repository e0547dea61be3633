//! YAML text → ServiceEntries → table. Must never panic, whatever the text; and libyaml's
//! fast reading (`yaml::parse`) must give serde-saphyr's verdicts (`yaml::parse_serde_saphyr`).
#![no_main]

use std::sync::Arc;

use globaldns::serviceentry::yaml;
use globaldns::table::{AutoAllocate, Live, SourceInput, TableSettings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = yaml::parse(text, "default");
    let reference = yaml::parse_serde_saphyr(text, "default");
    assert_eq!(format!("{parsed:?}"), format!("{reference:?}"), "the two readings differ");
    let Ok(parsed) = parsed else { return };
    let mut settings = TableSettings::new(&["global", "example.com"]).unwrap();
    settings.auto_allocate = AutoAllocate::IstioLegacy;
    let name: Arc<str> = "fuzz".into();
    let table = Live::build(&settings, &[SourceInput { name: &name, entries: &parsed.entries }], 1, true);
    for host in table.hosts() {
        let _ = table.lookup(&globaldns::name::to_wire(&host.name.replace('*', "x")).unwrap_or_default());
    }
});
