//! Generates the REST client from the committed contract, `openapi/openapi.json`, with Oxide's
//! progenitor: the CLI is the contract's first consumer, so a change to the contract that a
//! generated client cannot follow fails this build.
//!
//! Settings: positional arguments; `date-time` strings kept as strings (see below).

use std::path::Path;

fn main() {
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    println!("cargo:rerun-if-changed={}", spec_path.display());
    let text = std::fs::read_to_string(&spec_path).expect("openapi/openapi.json is readable");
    let spec: openapiv3::OpenAPI = serde_json::from_str(&text).expect("openapi/openapi.json is an OpenAPI 3.0 document");
    let mut settings = progenitor::GenerationSettings::default();
    settings.with_interface(progenitor::InterfaceStyle::Positional);
    // Times stay the strings the server sent: `-o json` prints the API's document unchanged
    // (chrono would rewrite `+00:00` as `Z`), and the CLI does no arithmetic on them.
    let date_time = schemars::schema::SchemaObject {
        instance_type: Some(schemars::schema::InstanceType::String.into()),
        format: Some("date-time".into()),
        ..Default::default()
    };
    settings.with_conversion(date_time, "::std::string::String", [progenitor::TypeImpl::Display].into_iter());
    let mut generator = progenitor::Generator::new(&settings);
    let tokens = generator.generate_tokens(&spec).expect("progenitor generates a client from the contract");
    let file = syn::parse2(tokens).expect("the generated client parses");
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("client.rs");
    std::fs::write(out, prettyplease::unparse(&file)).expect("write the generated client");
}
