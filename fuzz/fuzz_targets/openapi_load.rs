//! Loading an OpenAPI document (YAML or JSON) never panics, whatever it holds; and the YAML
//! reader the configuration uses never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::discovery::Inventory;
use portcullis::validate::{ApiContract, ContractSettings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = serde_saphyr::from_str::<serde_json::Value>(text);
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("api.yaml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = ApiContract::load(&path, ContractSettings::default(), &Inventory::default());
});
