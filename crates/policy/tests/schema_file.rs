//! `docs/policy.schema.json` is the schema editors load; it must be what
//! `palisade schema` prints. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p palisade-policy --test schema_file`.

#[test]
fn the_committed_schema_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/policy.schema.json");
    let want = palisade_policy::json_schema() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &want).expect("write schema");
    }
    let got = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "docs/policy.schema.json is stale; regenerate it"
    );
}
