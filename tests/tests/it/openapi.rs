//! The committed contract must equal the generated one (regenerate with `scripts/openapi`), and it
//! lints clean with a well-known OpenAPI linter (`redocly lint`, exceptions justified in `redocly.yaml`).

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

#[test]
fn committed_problem_catalogue_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/problems.md");
    let committed = std::fs::read_to_string(path).expect("docs/problems.md is committed");
    assert!(
        committed == turnstone_api::error::problems_markdown(),
        "docs/problems.md is stale: run scripts/openapi and commit the result"
    );
}

/// The problem codes written in Rust sources under `dir`: the first literal argument of
/// `invalid(`, `conflict(` and `bad_request(`, the literal that follows a status in
/// `…::new(StatusCode::X, "code"` or `raw_problem(status, "code"`, and `TooMany { code: "…"` or `TooLarge { code: "…"`.
fn code_literals(dir: &std::path::Path, out: &mut std::collections::BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            code_literals(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let src = std::fs::read_to_string(&path).expect("source");
        for (start, _) in src.match_indices('"') {
            let Some(len) = src[start + 1..].find('"') else { continue };
            let literal = &src[start + 1..start + 1 + len];
            if literal.is_empty() || !literal.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                continue;
            }
            // What precedes the literal, whitespace removed.
            let mut from = start.saturating_sub(120);
            while !src.is_char_boundary(from) {
                from -= 1;
            }
            let before: String = src[from..start].chars().filter(|c| !c.is_whitespace()).collect();
            let after_status = before.strip_suffix(',').is_some_and(|b| {
                b.ends_with("(status")
                    || b.rsplit_once("StatusCode::").is_some_and(|(_, s)| s.bytes().all(|c| c.is_ascii_uppercase() || c == b'_'))
            });
            let is_code = after_status
                || ["invalid(", "conflict(", "unprocessable(", "bad_request(", "TooMany{code:", "TooLarge{code:"]
                    .iter()
                    .any(|m| before.ends_with(m));
            if is_code {
                out.entry(literal.to_owned()).or_insert_with(|| path.display().to_string());
            }
        }
    }
}

#[test]
fn every_problem_code_in_the_sources_is_catalogued_and_every_entry_is_used() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut found = std::collections::BTreeMap::new();
    code_literals(&root.join("api/src"), &mut found);
    code_literals(&root.join("core/src"), &mut found);
    assert!(found.len() > 30, "the scan finds the codes (found {found:?})");
    let missing: Vec<_> = found.iter().filter(|(code, _)| turnstone_api::error::problem_type(code).is_none()).collect();
    assert!(missing.is_empty(), "codes missing from api/src/error/catalog.rs (code, first file): {missing:?}");
    let unused: Vec<_> =
        turnstone_api::error::PROBLEM_TYPES.iter().map(|p| p.code).filter(|code| !found.contains_key(*code)).collect();
    assert!(unused.is_empty(), "catalogued codes no source emits: {unused:?}");
}

#[test]
fn the_contract_lints_clean_with_redocly() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    // Installed by `scripts/sdk` (which `scripts/test` runs) from sdk/typescript/package-lock.json.
    let bin = std::path::Path::new(root).join("sdk/typescript/node_modules/.bin/redocly");
    if !bin.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} not found; scripts/test runs scripts/sdk, which installs it",
            bin.display()
        );
        eprintln!("SKIPPED: {} not found; run scripts/sdk (scripts/test does)", bin.display());
        return;
    }
    let out = std::process::Command::new(&bin)
        .current_dir(root)
        .args(["lint", "--config", "redocly.yaml", "--format", "json", "openapi/openapi.json"])
        .output()
        .expect("redocly runs");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("redocly prints a JSON report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let problems: Vec<String> = report["problems"]
        .as_array()
        .expect("a problems list")
        .iter()
        .map(|p| format!("{} {} at {}", p["severity"], p["ruleId"], p["location"][0]["pointer"]))
        .collect();
    assert!(out.status.success(), "redocly lint fails: {problems:#?}");
    // The warnings kept are the ones redocly.yaml justifies, and no others.
    let expected = ["/paths/~1health/get/responses", "/paths/~1ready/get/responses", "/paths/~1problems/get/responses"]
        .map(|pointer| format!("\"warn\" \"operation-4xx-response\" at \"#{pointer}\""));
    assert_eq!(problems, expected);
}
