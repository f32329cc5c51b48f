//! Invariant 9, fuzzed: malformed requests generated from the committed OpenAPI document, for every operation, never get a 5xx and always get problem+json.
//!
//! Seeded and bounded: `TURNSTONE_FUZZ_SEED` replays a run (the seed is printed), `TURNSTONE_FUZZ_CASES`
//! sets the cases per operation (default 40, a few seconds; raise it by hand for a longer run).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use turnstone_tests::{Client, Stack};

const MARK: &str = "\u{1}FUZZ\u{1}";
const DEEP: usize = 5000;

/// One operation of the contract.
struct Op {
    method: Method,
    template: String,
    params: Vec<Param>,
    /// The request body schema (a `$ref` or inline), if the operation takes one.
    body: Option<Value>,
    /// Which credential the operation takes, by its security scheme.
    auth: Cred,
    /// Every method the path answers.
    siblings: Vec<Method>,
}

struct Param {
    name: String,
    location: String,
    schema: Value,
}

#[derive(Clone, Copy, PartialEq)]
enum Cred {
    None,
    OrgKey,
    Operator,
}

/// Ids of real resources for path parameters and id-valued fields, so that a request
/// is valid except for the one thing a case breaks.
struct Fixtures {
    ids: BTreeMap<&'static str, String>,
    /// Resources a successful DELETE may consume.
    victims: BTreeMap<&'static str, String>,
    sim_url: String,
    org_key: String,
    operator: String,
    revoked_key: String,
}

/// A generated request.
struct Req {
    kind: &'static str,
    what: String,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    /// Send the body chunked (no Content-Length).
    chunked: bool,
}

fn load_contract() -> (Value, Vec<Op>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("openapi/openapi.json")).expect("valid JSON");
    let mut ops = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let params = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| Param {
                            name: p["name"].as_str().expect("param name").to_owned(),
                            location: p["in"].as_str().expect("param in").to_owned(),
                            schema: p["schema"].clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body = op["requestBody"]["content"].as_object().and_then(|c| c.values().next()).map(|m| m["schema"].clone());
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_object())
                .flat_map(|s| s.keys())
                .map(String::as_str)
                .collect();
            let auth = if schemes.contains(&"OperatorToken") {
                Cred::Operator
            } else if schemes.is_empty() {
                Cred::None
            } else {
                Cred::OrgKey
            };
            let siblings = item
                .as_object()
                .unwrap()
                .keys()
                .map(|m| Method::from_bytes(m.to_uppercase().as_bytes()).expect("method"))
                .collect();
            ops.push(Op { method, template: template.clone(), params, body, auth, siblings });
        }
    }
    (doc, ops)
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => schema,
    }
}

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn prefix_of(name: &str) -> &'static str {
    match name {
        "org_id" => "org",
        "key_id" => "key",
        "provider_id" => "prv",
        "model_id" => "mdl",
        "agent_id" => "agt",
        "session_id" => "ses",
        "approval_id" => "apr",
        "since_id" | "Last-Event-ID" => "evt",
        "after" => "agt",
        _ => "xyz",
    }
}

fn absent(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A wrong id, as a plain string (for bodies, or to be percent-encoded).
fn bad_id(rng: &mut StdRng, prefix: &str, valid: &str) -> (String, String) {
    let other = *["agt", "ses", "prv", "mdl", "evt", "key", "org", "trn", "xyz", "AGT"]
        .iter()
        .filter(|p| **p != prefix)
        .collect::<Vec<_>>()
        .choose(rng)
        .unwrap();
    let hex = valid.split_once('_').map(|(_, h)| h.to_owned()).unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let long = rng.random_range(33..20_000);
    let choices: Vec<(&str, String)> = vec![
        ("wrong prefix", format!("{other}_{hex}")),
        ("well-formed, absent", absent(prefix)),
        ("too long", format!("{prefix}_{}", "a".repeat(long))),
        ("unicode", format!("{prefix}_ü☃𝄞\u{202e}{}", &hex[..hex.len().min(20)])),
        ("prefix only", format!("{prefix}_")),
        ("no prefix", uuid::Uuid::now_v7().to_string()),
        ("upper case", valid.to_uppercase()),
        ("nil", format!("{prefix}_{}", "0".repeat(32))),
        ("all f", format!("{prefix}_{}", "f".repeat(32))),
        ("short", format!("{prefix}_123")),
        ("not hex", format!("{prefix}_{}", "z".repeat(32))),
        ("trailing junk", format!("{valid}x")),
        ("trailing space", format!("{valid} ")),
        ("NUL", format!("{prefix}_\0{hex}")),
        ("sql", "' OR 1=1 --".to_owned()),
        ("number", "-1".to_owned()),
        ("huge number", "9".repeat(400)),
        ("dots", "..".to_owned()),
        ("slash", format!("{prefix}/{hex}")),
        ("whitespace", " \t ".to_owned()),
        ("empty", String::new()),
    ];
    let (what, v) = choices.choose(rng).unwrap().clone();
    (what.to_owned(), v)
}

/// A bad path segment, already encoded (some deliberately raw).
fn bad_segment(rng: &mut StdRng, prefix: &str, valid: &str) -> (String, String) {
    if rng.random_bool(0.2) {
        let raw = ["..", "%2e%2e", ".", "%00", "%FF%FE", "%ZZ", "%2F", "%", "%C0%AF", "%ED%A0%80", "%F0%9F"];
        let v = *raw.choose(rng).unwrap();
        return (format!("raw {v}"), v.to_owned());
    }
    let (what, v) = bad_id(rng, prefix, valid);
    (what, enc(&v))
}

/// A valid value for a schema, with real ids and sensible values by field name.
fn valid_value(rng: &mut StdRng, doc: &Value, schema: &Value, name: &str, fx: &Fixtures, full: bool) -> Value {
    let schema = resolve(doc, schema);
    if let Some(values) = schema["enum"].as_array() {
        return values[0].clone();
    }
    match name {
        "model_id" | "agent_id" | "provider_id" => return json!(fx.ids[name]),
        "base_url" => return json!(fx.sim_url),
        "expires_at" => return json!((chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339()),
        "capabilities" => return json!(["math"]),
        "is_default" | "disabled" => return json!(false),
        "max_iterations" => return json!(3),
        "max_turn_secs" => return json!(60),
        "text" => return json!("hello"),
        "api_key" => return json!("sk-fuzz"),
        "name" if !schema["maxLength"].is_null() => return json!(format!("fuzz {}", rng.random::<u32>())),
        "tags" => return json!(["t1"]),
        _ => {}
    }
    match schema["type"].as_str() {
        Some("string") => json!("x"),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        Some("array") => {
            let n = schema["minItems"].as_u64().unwrap_or(0).max(1);
            json!((0..n).map(|_| valid_value(rng, doc, &schema["items"], "", fx, full)).collect::<Vec<_>>())
        }
        _ => {
            let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
            let mut out = serde_json::Map::new();
            for (prop, s) in schema["properties"].as_object().into_iter().flatten() {
                if required.contains(&prop.as_str()) || (full && rng.random_bool(0.5)) {
                    out.insert(prop.clone(), valid_value(rng, doc, s, prop, fx, full));
                }
            }
            Value::Object(out)
        }
    }
}

/// JSON pointers (as key paths) to every property reachable from the body, with its schema.
fn property_paths(doc: &Value, schema: &Value, prefix: Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    let schema = resolve(doc, schema);
    match schema["type"].as_str() {
        Some("array") => {
            let mut p = prefix.clone();
            p.push("0".into());
            let items = resolve(doc, &schema["items"]);
            if items["type"].as_str() == Some("object") || items["properties"].is_object() {
                out.push((p.clone(), items.clone()));
                property_paths(doc, items, p, out);
            } else {
                out.push((p, items.clone()));
            }
        }
        _ => {
            for (prop, s) in schema["properties"].as_object().into_iter().flatten() {
                let mut p = prefix.clone();
                p.push(prop.clone());
                let resolved = resolve(doc, s).clone();
                out.push((p.clone(), resolved.clone()));
                if resolved["type"] == "array" || resolved["properties"].is_object() {
                    property_paths(doc, &resolved, p, out);
                }
            }
        }
    }
}

/// Sets `value` at `path`, creating objects and arrays on the way.
fn set_path(body: &mut Value, path: &[String], value: Value) {
    let Some((head, rest)) = path.split_first() else {
        *body = value;
        return;
    };
    if let Ok(i) = head.parse::<usize>() {
        if !body.is_array() {
            *body = json!([]);
        }
        let arr = body.as_array_mut().unwrap();
        while arr.len() <= i {
            arr.push(json!({}));
        }
        set_path(&mut arr[i], rest, value);
    } else {
        if !body.is_object() {
            *body = json!({});
        }
        let obj = body.as_object_mut().unwrap();
        set_path(obj.entry(head.clone()).or_insert(Value::Null), rest, value);
    }
}

fn deep(open: &str, close: &str, inner: &str) -> String {
    format!("{}{inner}{}", open.repeat(DEEP), close.repeat(DEEP))
}

/// A raw JSON value of the wrong kind, or out of bounds, for this schema.
fn wrong_value(rng: &mut StdRng, schema: &Value, name: &str) -> (String, String) {
    let max_len = schema["maxLength"].as_u64().map(|n| n as usize);
    let max_items = schema["maxItems"].as_u64().map(|n| n as usize);
    let mut c: Vec<(String, String)> = vec![
        ("null".into(), "null".into()),
        ("huge float".into(), "1e400".into()),
        ("deep array".into(), deep("[", "]", "")),
        ("deep object".into(), deep(r#"{"a":"#, "}", "1")),
    ];
    let ty = schema["type"].as_str().unwrap_or(if schema["properties"].is_object() { "object" } else { "string" });
    match ty {
        "string" => {
            c.extend(
                [("number", "42"), ("bool", "true"), ("array", r#"["x"]"#), ("object", r#"{"x":1}"#), ("float", "1.5")]
                    .map(|(a, b)| (a.to_owned(), b.to_owned())),
            );
            let over = max_len.unwrap_or(100_000) + 1 + rng.random_range(0..50);
            c.push(("over maxLength (ascii)".into(), json!("x".repeat(over)).to_string()));
            c.push(("over maxLength (multibyte)".into(), json!("é".repeat(over)).to_string()));
            c.push(("over maxLength (astral)".into(), json!("𝄞".repeat(over)).to_string()));
            c.push(("empty".into(), r#""""#.into()));
            c.push(("whitespace".into(), json!(" \t\n ").to_string()));
            c.push(("NUL".into(), r#""a\u0000b""#.into()));
            c.push(("lone surrogate".into(), r#""\ud800""#.into()));
            c.push(("control chars".into(), r#""\u0001\u001b[31m\r\n""#.into()));
            c.push(("bidi and zero-width".into(), json!("\u{202e}\u{200b}\u{feff}abc").to_string()));
            c.push(("unknown enum value".into(), json!("not-a-value").to_string()));
            c.push((
                "date-ish".into(),
                json!(
                    [
                        "not-a-date",
                        "2020-13-45T99:99:99Z",
                        "+275760-09-13T00:00:00Z",
                        "1969-01-01T00:00:00Z",
                        "9999-12-31T23:59:59Z"
                    ]
                    .choose(rng)
                    .unwrap()
                )
                .to_string(),
            ));
            c.push((
                "url-ish".into(),
                json!(
                    ["ftp://x", "http://", "javascript:alert(1)", "http://[::1", "http://127.0.0.1:0/v1", "file:///etc/passwd"]
                        .choose(rng)
                        .unwrap()
                )
                .to_string(),
            ));
            if name.ends_with("_id") || name == "after" {
                let (what, v) = bad_id(rng, prefix_of(name), &absent(prefix_of(name)));
                c.push((format!("bad id ({what})"), json!(v).to_string()));
                c.push(("well-formed absent id".into(), json!(absent(prefix_of(name))).to_string()));
            }
        }
        "integer" | "number" => {
            for (a, b) in [
                ("string", r#""5""#),
                ("negative", "-1"),
                ("zero", "0"),
                ("2^64", "18446744073709551616"),
                ("2^63", "9223372036854775808"),
                ("-2^63-1", "-9223372036854775809"),
                ("2^31", "2147483648"),
                ("-2^31-1", "-2147483649"),
                ("fraction", "1.5"),
                ("exponent", "1e2"),
                ("negative zero", "-0"),
                ("bool", "true"),
                ("array", "[1]"),
                ("400 digits", &"9".repeat(400)),
                ("negative huge float", "-1e400"),
            ] {
                c.push((a.to_owned(), b.to_owned()));
            }
        }
        "boolean" => {
            for (a, b) in [("string", r#""true""#), ("one", "1"), ("zero", "0"), ("array", "[true]"), ("yes", r#""yes""#)] {
                c.push((a.to_owned(), b.to_owned()));
            }
        }
        "array" => {
            let n = max_items.unwrap_or(1000) + 1 + rng.random_range(0..20);
            let item = if schema["items"]["$ref"].is_string() { json!({"type": "text", "text": "x"}) } else { json!("t") };
            let items: Vec<Value> = (0..n)
                .map(|i| match &item {
                    Value::String(_) => json!(format!("t{i}")),
                    v => v.clone(),
                })
                .collect();
            c.push(("over maxItems".into(), Value::Array(items).to_string()));
            c.push(("10k items".into(), Value::Array(vec![json!(1); 10_000]).to_string()));
            for (a, b) in [
                ("object", "{}"),
                ("string", r#""x""#),
                ("number", "1"),
                ("wrong item type", "[1, true, {}]"),
                ("null item", "[null]"),
                ("empty", "[]"),
            ] {
                c.push((a.to_owned(), b.to_owned()));
            }
        }
        _ => {
            for (a, b) in [
                ("array", "[]"),
                ("string", r#""x""#),
                ("number", "1"),
                ("unknown field", r#"{"zz_unknown": 1}"#),
                ("empty", "{}"),
            ] {
                c.push((a.to_owned(), b.to_owned()));
            }
        }
    }
    c.choose(rng).unwrap().clone()
}

fn with_mark(body: &Value, raw: &str) -> String {
    body.to_string().replacen(&json!(MARK).to_string(), raw, 1)
}

/// A malformed body for this schema: raw bytes and a description.
fn bad_body(rng: &mut StdRng, doc: &Value, schema: &Value, fx: &Fixtures) -> (String, Vec<u8>) {
    let base = valid_value(rng, doc, schema, "", fx, true);
    let text = base.to_string();
    let resolved = resolve(doc, schema);
    let required: Vec<String> =
        resolved["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_owned)).collect();
    match rng.random_range(0..14) {
        0..=3 => {
            let mut paths = Vec::new();
            property_paths(doc, schema, vec![], &mut paths);
            if paths.is_empty() {
                return ("unknown field on an empty schema".into(), br#"{"zz_unknown": 1}"#.to_vec());
            }
            let (path, prop_schema) = paths.choose(rng).unwrap().clone();
            let name = path.last().cloned().unwrap_or_default();
            let (what, raw) = wrong_value(rng, &prop_schema, &name);
            let mut body = base.clone();
            set_path(&mut body, &path, json!(MARK));
            (format!("{} = {what}", path.join(".")), with_mark(&body, &raw).into_bytes())
        }
        4 => {
            let cut = rng.random_range(0..text.len().max(1));
            let broken = [
                text[..cut].to_owned(),
                r#"{"a":}"#.into(),
                "{,}".into(),
                "{'name': 'x'}".into(),
                "NaN".into(),
                format!("{text}}}"),
                format!("{text} trailing"),
            ];
            ("invalid JSON".into(), broken.choose(rng).unwrap().clone().into_bytes())
        }
        5 => {
            let bad: &[&[u8]] =
                &[&[0xff, 0xfe], &[0xc0, 0xaf], &[0xed, 0xa0, 0x80], &[0x80], &[0xf4, 0x90, 0x80, 0x80], &[0xe2, 0x82]];
            let bytes = *bad.choose(rng).unwrap();
            let mut out = Vec::new();
            if let Some(i) = text.find(":\"") {
                out.extend_from_slice(&text.as_bytes()[..i + 2]);
                out.extend_from_slice(bytes);
                out.extend_from_slice(&text.as_bytes()[i + 2..]);
            } else {
                out.extend_from_slice(br#"{"name": ""#);
                out.extend_from_slice(bytes);
                out.extend_from_slice(br#""}"#);
            }
            (format!("invalid UTF-8 {bytes:02x?}"), out)
        }
        6 => {
            let tops = [
                "[]".to_owned(),
                format!("[{text}]"),
                r#""string""#.into(),
                "42".into(),
                "null".into(),
                "true".into(),
                "1e400".into(),
                "-1".into(),
            ];
            let t = tops.choose(rng).unwrap().clone();
            (format!("top-level {t:.20}"), t.into_bytes())
        }
        7 => {
            let variants = [
                ("deep arrays", deep("[", "]", "")),
                ("deep objects", deep(r#"{"a":"#, "}", "1")),
                ("deep unknown field", format!(r#"{{"zz": {}}}"#, deep("[", "]", ""))),
            ];
            let (what, b) = variants.choose(rng).unwrap().clone();
            (what.into(), b.into_bytes())
        }
        8 => {
            let mut body = base.clone();
            let names = [
                "zz_unknown".to_owned(),
                "__proto__".into(),
                "constructor".into(),
                String::new(),
                "k".repeat(1000),
                "id".into(),
                "org_id".into(),
                "created_at".into(),
            ];
            let key = names.choose(rng).unwrap().clone();
            if let Some(obj) = body.as_object_mut() {
                obj.insert(key.clone(), json!(1));
            }
            (format!("unknown field {key:.20}"), body.to_string().into_bytes())
        }
        9 if !required.is_empty() => {
            let field = required.choose(rng).unwrap().clone();
            let mut body = base.clone();
            if rng.random_bool(0.5) {
                body[&field] = Value::Null;
                (format!("null required {field}"), body.to_string().into_bytes())
            } else {
                body.as_object_mut().unwrap().remove(&field);
                (format!("missing required {field}"), body.to_string().into_bytes())
            }
        }
        10 => {
            let variants: [(&str, Vec<u8>); 5] = [
                ("empty body", vec![]),
                ("whitespace body", b"  \n ".to_vec()),
                ("BOM", [&[0xef, 0xbb, 0xbf][..], text.as_bytes()].concat()),
                ("NUL bytes", vec![0; 64]),
                ("duplicate keys", format!("{}, {}", text.trim_end_matches('}'), &text[1..]).into_bytes()),
            ];
            let (what, b) = variants.choose(rng).unwrap().clone();
            (what.into(), b)
        }
        11 => {
            let many: serde_json::Map<String, Value> = (0..10_000).map(|i| (format!("k{i}"), json!(i))).collect();
            ("10k unknown fields".into(), Value::Object(many).to_string().into_bytes())
        }
        12 => ("huge number body".into(), format!(r#"{{"n": {}}}"#, "9".repeat(100_000)).into_bytes()),
        _ => {
            // Every property at once replaced with a wrong-typed value.
            let mut paths = Vec::new();
            property_paths(doc, schema, vec![], &mut paths);
            let mut body = base.clone();
            let mut raws = Vec::new();
            for (path, s) in paths.iter().filter(|(p, _)| p.len() == 1) {
                let (_, raw) = wrong_value(rng, s, &path[0]);
                if raw.len() < 10_000 {
                    set_path(&mut body, path, json!(format!("{MARK}{}", raws.len())));
                    raws.push(raw);
                }
            }
            let mut t = body.to_string();
            for (i, raw) in raws.iter().enumerate() {
                t = t.replacen(&json!(format!("{MARK}{i}")).to_string(), raw, 1);
            }
            ("all properties wrong".into(), t.into_bytes())
        }
    }
}

/// A garbage query value for this parameter schema.
fn bad_query_value(rng: &mut StdRng, p: &Param) -> (String, String) {
    let ty = p.schema["type"].as_str().unwrap_or("string");
    let mut c: Vec<(String, String)> = vec![
        ("empty".into(), String::new()),
        ("long".into(), "x".repeat(rng.random_range(1000..8000))),
        ("unicode".into(), "ü☃𝄞\u{202e}".into()),
        ("NUL".into(), "\0".into()),
    ];
    match ty {
        "integer" | "number" => {
            for v in [
                "abc",
                "-1",
                "0",
                "4294967296",
                "18446744073709551616",
                "9223372036854775808",
                "-9223372036854775809",
                "1e400",
                "1.5",
                " 1",
                "0x10",
                "+5",
                "NaN",
                "99999999999999999999999999",
                "2147483648",
            ] {
                c.push((format!("int {v}"), v.to_owned()));
            }
        }
        "boolean" => {
            for v in ["yes", "2", "TRUE", "null", "on", "tru"] {
                c.push((format!("bool {v}"), v.to_owned()));
            }
        }
        "array" => {
            for v in ["not.a.type", "turn.completed,,,", ",", "*", "%"] {
                c.push((format!("array item {v}"), v.to_owned()));
            }
            c.push(("1000 types".into(), (0..1000).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",")));
        }
        _ => {
            let (what, v) = bad_id(rng, prefix_of(&p.name), &absent(prefix_of(&p.name)));
            c.push((format!("id {what}"), v));
            c.push(("absent id".into(), absent(prefix_of(&p.name))));
        }
    }
    let (what, v) = c.choose(rng).unwrap().clone();
    (format!("{}={what}", p.name), v)
}

fn valid_query(rng: &mut StdRng, op: &Op, fx: &Fixtures) -> Vec<(String, String)> {
    let mut q = Vec::new();
    for p in op.params.iter().filter(|p| p.location == "query") {
        if !rng.random_bool(0.5) {
            continue;
        }
        let v = match (p.name.as_str(), p.schema["type"].as_str()) {
            ("agent_id", _) => fx.ids["agent_id"].clone(),
            ("types", _) => "turn.completed".into(),
            ("tag", _) => "t1".into(),
            (_, Some("integer")) => "1".into(),
            (_, Some("boolean")) => "false".into(),
            _ => continue,
        };
        q.push((p.name.clone(), v));
    }
    q
}

fn credential(op: &Op, fx: &Fixtures) -> Option<String> {
    match op.auth {
        Cred::None => None,
        Cred::OrgKey => Some(fx.org_key.clone()),
        Cred::Operator => Some(fx.operator.clone()),
    }
}

fn auth_header(token: &str) -> (String, Vec<u8>) {
    ("authorization".into(), format!("Bearer {token}").into_bytes())
}

fn kinds(op: &Op) -> Vec<&'static str> {
    let mut k = vec!["auth", "auth", "unknown query", "method"];
    if op.params.iter().any(|p| p.location == "path") {
        k.extend(["path", "path"]);
    }
    if op.params.iter().any(|p| p.location == "query") {
        k.extend(["query", "query"]);
    }
    if op.params.iter().any(|p| p.location == "header") {
        k.push("header");
    }
    if op.body.is_some() {
        k.extend(["body", "body", "body", "body", "body", "content-type", "oversize"]);
    } else if op.method != Method::GET {
        k.push("unexpected body");
    }
    k
}

fn generate(rng: &mut StdRng, doc: &Value, op: &Op, fx: &Fixtures, i: usize) -> Req {
    let all = kinds(op);
    // Every kind once in the first cases, then at random.
    let mut unique = all.clone();
    unique.dedup();
    // A wrong method is a routing question: once per operation is enough.
    let random: Vec<&str> = all.iter().copied().filter(|k| *k != "method").collect();
    let kind = if i < unique.len() { unique[i] } else { *random.choose(rng).unwrap() };
    let mut what = String::new();

    // Mutations (DELETE, PATCH) go to spare resources, so the final turn still works.
    let ids = if op.method == Method::DELETE || op.method == Method::PATCH { &fx.victims } else { &fx.ids };
    let path_params: Vec<&Param> = op.params.iter().filter(|p| p.location == "path").collect();
    let broken_param = (kind == "path").then(|| rng.random_range(0..path_params.len()));
    let mut path = op.template.clone();
    for (j, p) in path_params.iter().enumerate() {
        let valid = ids
            .get(p.name.as_str())
            .or_else(|| fx.ids.get(p.name.as_str()))
            .unwrap_or_else(|| panic!("no fixture for {}", p.name))
            .clone();
        let v = if broken_param == Some(j) {
            let (w, v) = bad_segment(rng, prefix_of(&p.name), &valid);
            what = format!("{}: {w}", p.name);
            v
        } else {
            valid
        };
        path = path.replace(&format!("{{{}}}", p.name), &v);
    }

    let mut query = valid_query(rng, op, fx);
    if kind == "query" {
        let qs: Vec<&Param> = op.params.iter().filter(|p| p.location == "query").collect();
        let p = qs.choose(rng).unwrap();
        query.retain(|(n, _)| n != &p.name);
        let (w, v) = bad_query_value(rng, p);
        if rng.random_bool(0.15) {
            // The same parameter twice: one valid, one not.
            query.push((p.name.clone(), "1".into()));
        }
        query.push((p.name.clone(), v));
        what = w;
    }
    if kind == "unknown query" {
        let names = ["zz", "limit", "after", "__proto__", "org_id", "", "k[]", "a.b"];
        let name = names.choose(rng).unwrap().to_string();
        let values = ["-1".to_owned(), "x".repeat(4000), "\0".into(), "ü☃".into(), absent("org"), "1e400".into()];
        let v = values.choose(rng).unwrap().clone();
        what = format!("unknown query {name}={v:.20}");
        query.push((name, v));
    }

    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let token = credential(op, fx);
    if kind == "auth" {
        let valid = token.clone().unwrap_or_else(|| fx.org_key.clone());
        let other = if op.auth == Cred::Operator { fx.org_key.clone() } else { fx.operator.clone() };
        let options: Vec<(&str, Option<Vec<u8>>)> = vec![
            ("missing", None),
            ("empty bearer", Some(b"Bearer ".to_vec())),
            ("scheme only", Some(b"Bearer".to_vec())),
            ("basic", Some(b"Basic dXNlcjpwYXNz".to_vec())),
            ("other scheme", Some(format!("Token {valid}").into_bytes())),
            ("garbage", Some(b"Bearer !!!@@@###".to_vec())),
            ("unknown well-formed key", Some(format!("Bearer {}", turnstone_tests::api_key()).into_bytes())),
            ("revoked key", Some(format!("Bearer {}", fx.revoked_key).into_bytes())),
            ("other credential", Some(format!("Bearer {other}").into_bytes())),
            ("truncated", Some(format!("Bearer {}", &valid[..valid.len() - 1]).into_bytes())),
            ("extended", Some(format!("Bearer {valid}x").into_bytes())),
            ("long token", Some(format!("Bearer ts_live_{}", "a".repeat(8000)).into_bytes())),
            ("non-ASCII token", Some([&b"Bearer ts_live_"[..], &[0xff, 0xfe, 0x80][..], &[b'a'; 30][..]].concat())),
            ("case-mangled", Some(format!("Bearer {}", valid.to_uppercase()).into_bytes())),
        ];
        let (w, h) = options.choose(rng).unwrap().clone();
        what = format!("authorization: {w}");
        if let Some(h) = h {
            headers.push(("authorization".into(), h));
        }
    } else if let Some(t) = &token {
        headers.push(auth_header(t));
    }

    if kind == "header" {
        let hs: Vec<&Param> = op.params.iter().filter(|p| p.location == "header").collect();
        let p = hs.choose(rng).unwrap();
        let values: Vec<(&str, Vec<u8>)> = vec![
            ("256 chars", vec![b'k'; 256]),
            ("8 KB", vec![b'k'; 8000]),
            ("empty", vec![]),
            ("space", b"has space".to_vec()),
            ("non-ASCII", vec![0xff, 0xfe, 0x80, b'a']),
            ("tab", b"\tx\t".to_vec()),
            ("absent id", absent("evt").into_bytes()),
            ("wrong prefix", absent("agt").into_bytes()),
            ("number", b"-1".to_vec()),
        ];
        let (w, v) = values.choose(rng).unwrap().clone();
        what = format!("{}: {w}", p.name);
        headers.push((p.name.to_lowercase(), v));
    }

    let mut method = op.method.clone();
    if kind == "method" {
        let others: Vec<Method> = [Method::PUT, Method::PATCH, Method::DELETE, Method::POST, Method::GET]
            .into_iter()
            .filter(|m| !op.siblings.contains(m))
            .collect();
        method = others.choose(rng).unwrap().clone();
        what = format!("method {method}");
    }

    let mut body = None;
    let mut chunked = false;
    if let Some(schema) = &op.body {
        let mut content_type = Some("application/json".to_owned());
        let bytes = match kind {
            "body" => {
                let (w, b) = bad_body(rng, doc, schema, fx);
                what = w;
                b
            }
            "oversize" => {
                let n = rng.random_range(1024 * 1024 + 1..3 * 1024 * 1024);
                chunked = rng.random_bool(0.3);
                what = format!("oversize {n} bytes{}", if chunked { ", chunked" } else { "" });
                if rng.random_bool(0.5) { json!({"name": "x".repeat(n)}).to_string().into_bytes() } else { vec![b' '; n] }
            }
            _ => valid_value(rng, doc, schema, "", fx, true).to_string().into_bytes(),
        };
        if kind == "content-type" {
            let types = [
                None,
                Some("text/plain"),
                Some("application/xml"),
                Some("application/x-www-form-urlencoded"),
                Some("multipart/form-data; boundary=x"),
                Some("application/jsonx"),
                Some("json"),
                Some(""),
                Some("*/*"),
                Some("application/json; charset=latin1"),
                Some("application/problem+json"),
                Some("APPLICATION/JSON"),
            ];
            let t = *types.choose(rng).unwrap();
            what = format!("content-type {t:?}");
            content_type = t.map(str::to_owned);
        }
        if let Some(t) = content_type {
            headers.push(("content-type".into(), t.into_bytes()));
        }
        body = Some(bytes);
    } else if kind == "unexpected body" {
        what = "a body where none is taken".into();
        headers.push(("content-type".into(), b"application/json".to_vec()));
        body = Some(if rng.random_bool(0.5) { b"{\"zz\": [[[[".to_vec() } else { vec![b'x'; 2 * 1024 * 1024] });
    }
    if what.is_empty() {
        what = kind.into();
    }
    Req { kind, what, method, path, query, headers, body, chunked }
}

/// What came back: status, content type, body (not read for a live event stream).
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

async fn send(http: &reqwest::Client, base: &str, req: &Req) -> Result<Answer, String> {
    let mut url = format!("{base}{}", req.path);
    if !req.query.is_empty() {
        url.push('?');
        url.push_str(&req.query.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&"));
    }
    let mut rb = http.request(req.method.clone(), &url);
    for (name, value) in &req.headers {
        let value = reqwest::header::HeaderValue::from_bytes(value).map_err(|e| format!("unsendable header: {e}"))?;
        rb = rb.header(name.as_str(), value);
    }
    if let Some(body) = &req.body {
        rb = if req.chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
            rb.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        } else {
            rb.body(body.clone())
        };
    }
    let resp = rb.send().await.map_err(|e| format!("request failed: {e:?}"))?;
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if status < 300 && content_type.starts_with("text/event-stream") {
        return Ok(Answer { status, content_type, body: vec![] });
    }
    let body = resp.bytes().await.map_err(|e| format!("body read failed: {e}"))?.to_vec();
    Ok(Answer { status, content_type, body })
}

/// The contract every response must meet; `Err` says how it did not.
fn check(a: &Answer) -> Result<(), String> {
    if a.status >= 500 {
        return Err(format!("server error {}", a.status));
    }
    if a.status >= 400 {
        if a.content_type != "application/problem+json" {
            return Err(format!("{} with content type {:?}", a.status, a.content_type));
        }
        let body: Value = serde_json::from_slice(&a.body).map_err(|e| format!("{} body is not JSON: {e}", a.status))?;
        if body["code"].as_str().is_none_or(|c| c.is_empty()) {
            return Err(format!("{} problem without a string code", a.status));
        }
        if body["status"].as_u64() != Some(a.status as u64) {
            return Err(format!("{} problem with status field {}", a.status, body["status"]));
        }
    }
    Ok(())
}

/// Control characters spelled out, so a failure message shows what was sent.
fn visible(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

fn snippet(bytes: &[u8], n: usize) -> String {
    let s = visible(&String::from_utf8_lossy(&bytes[..bytes.len().min(n)]));
    if bytes.len() > n { format!("{s}…({} bytes)", bytes.len()) } else { s }
}

#[tokio::test]
async fn malformed_requests_to_every_operation_get_problem_json_and_no_5xx() {
    // Arrange: a stack, real resources for every path parameter, a seeded generator.
    let seed = std::env::var("TURNSTONE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    let cases: usize = std::env::var("TURNSTONE_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    println!("fuzz: TURNSTONE_FUZZ_SEED={seed} TURNSTONE_FUZZ_CASES={cases}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (doc, ops) = load_contract();
    assert!(ops.len() >= 25, "the contract lists every operation: {}", ops.len());

    let stack = Stack::start().await;
    let api = stack.client();
    let op = stack.operator();
    let created_key = |v: Value| v["key"].as_str().expect("key").to_owned();
    let checker = api.with_key(&created_key(api.post("/v1/api-keys", json!({"name": "checker"})).await.expect(201)));
    let revoked = api.post("/v1/api-keys", json!({"name": "revoked"})).await.expect(201);
    api.delete(&format!("/v1/api-keys/{}", revoked["id"].as_str().unwrap())).await.expect(200);
    let id = |v: Value| v["id"].as_str().expect("id").to_owned();
    let default_provider = id(api.get("/v1/providers").await.expect(200)["data"][0].clone());
    let model = id(api.post("/v1/models", json!({"provider_id": default_provider, "name": "sim-1"})).await.expect(201));
    let agent =
        id(api.post("/v1/agents", json!({"name": "fuzz", "capabilities": ["math"], "model_id": model})).await.expect(201));
    let session = id(api.post("/v1/sessions", json!({"agent_id": agent})).await.expect(201));
    let org = id(op.post("/v1/orgs", json!({"name": "fuzz target"})).await.expect(201));
    let spare_key = id(api.post("/v1/api-keys", json!({"name": "spare"})).await.expect(201));
    let victim_agent = id(api.post("/v1/agents", json!({"name": "victim"})).await.expect(201));
    let victim_provider =
        id(api.post("/v1/providers", json!({"name": "victim", "base_url": stack.sim.base_url()})).await.expect(201));
    let fx = Fixtures {
        ids: BTreeMap::from([
            ("org_id", org.clone()),
            ("key_id", spare_key.clone()),
            ("provider_id", default_provider.clone()),
            ("model_id", model),
            ("agent_id", agent),
            ("session_id", session),
            // No approval is pending: a well-formed id answers 404, as another session's would.
            ("approval_id", format!("apr_{}", "0".repeat(32))),
            ("code", "invalid_id".to_owned()),
            ("key", "user:name".to_owned()),
        ]),
        victims: BTreeMap::from([("key_id", spare_key), ("provider_id", victim_provider), ("agent_id", victim_agent)]),
        sim_url: stack.sim.base_url(),
        org_key: stack.key.clone(),
        operator: stack.operator_token.clone(),
        revoked_key: created_key(revoked),
    };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    // Act: every operation, `cases` malformed requests each.
    let started = Instant::now();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut unsendable = 0;
    for op in &ops {
        for i in 0..cases {
            let req = generate(&mut rng, &doc, op, &fx, i);
            *by_kind.entry(req.kind).or_default() += 1;
            let answer = match send(&http, &stack.base, &req).await {
                Ok(a) => a,
                Err(e) if e.starts_with("unsendable") => {
                    unsendable += 1;
                    continue;
                }
                Err(e) => {
                    failures.push(format!("{} {} [{}] {}: {e}", op.method, op.template, req.kind, req.what));
                    continue;
                }
            };
            *statuses.entry(answer.status).or_default() += 1;
            // A broken credential on a secured operation is always a 401, whatever else the request says.
            let auth_ok = req.kind != "auth" || op.auth == Cred::None || answer.status == 401;
            if let Err(why) =
                check(&answer).and(if auth_ok { Ok(()) } else { Err(format!("bad credential answered {}", answer.status)) })
            {
                let q: String =
                    req.query.iter().map(|(k, v)| format!("{k}={} ", visible(&v.chars().take(60).collect::<String>()))).collect();
                failures.push(format!(
                    "{} {} [{}] {}: {why}\n    sent {} {:.200} ?{q}\n    body {}\n    got {}",
                    op.method,
                    op.template,
                    req.kind,
                    req.what,
                    req.method,
                    req.path,
                    req.body.as_deref().map(|b| snippet(b, 200)).unwrap_or_default(),
                    snippet(&answer.body, 300),
                ));
            }
        }
    }
    let total: usize = statuses.values().sum();
    println!("fuzz: {} operations, {total} responses in {:.1?} (seed {seed})", ops.len(), started.elapsed());
    println!("fuzz: statuses {statuses:?}");
    println!("fuzz: kinds {by_kind:?}; unsendable {unsendable}");

    // Assert: every answer met the contract…
    assert!(
        failures.is_empty(),
        "{} of {total} responses broke the error contract (replay with TURNSTONE_FUZZ_SEED={seed}):\n{}",
        failures.len(),
        failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(statuses.keys().any(|s| (400..500).contains(s)), "the fuzzer produced client errors");
    // …and the stack still works: a normal turn completes.
    assert_eq!(checker.get("/ready").await.status, 200);
    ready_turn(&checker).await;
}

async fn ready_turn(api: &Client) {
    let session = api.session(&["math"]).await;
    api.say(&session, r#"!tool math {"expression":"6*7"}"#).await;
    let events = api.wait_for(&session, "session.idled", 1).await;
    assert!(events.iter().any(|e| e["type"] == "turn.completed"), "a normal turn completes after the fuzzing: {events:#?}");
}
