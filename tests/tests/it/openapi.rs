//! The committed contract must equal the generated one (regenerate with `scripts/openapi`).

#[test]
fn committed_openapi_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    let committed = std::fs::read_to_string(path).expect("openapi/openapi.json is committed");
    let generated = turnstone_api::openapi_json();
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("valid JSON");
    assert!(parse(&committed) == parse(&generated), "openapi/openapi.json is stale: run scripts/openapi and commit the result");
}

#[test]
fn every_operation_has_a_tag_summary_and_problem_errors() {
    let doc: serde_json::Value = serde_json::from_str(&turnstone_api::openapi_json()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let name = format!("{method} {path}");
            assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{name} has no tag");
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{name} has no summary");
            if path.starts_with("/v1") {
                let responses = op["responses"].as_object().unwrap();
                for code in ["400", "401", "404", "500"] {
                    let content = &responses.get(code).unwrap_or_else(|| panic!("{name} documents no {code}"))["content"];
                    assert!(content.get("application/problem+json").is_some(), "{name} {code} is not problem+json");
                }
            }
        }
    }
}
