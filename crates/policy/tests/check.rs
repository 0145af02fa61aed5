//! Broken policies: each must be refused with the right place and message.

use palisade_policy::{parse, BUILTIN};

/// Parses `src` and returns "line:col message" for every error.
fn errors(src: &str) -> Vec<String> {
    match parse(src, "p.toml") {
        Ok(_) => Vec::new(),
        Err(d) => {
            d.0.iter()
                .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
                .collect()
        }
    }
}

fn one_error(src: &str) -> String {
    let e = errors(src);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e[0].clone()
}

const HOST: &str = "[host]\npublic_interfaces = [\"eth0\"]\n";

#[test]
fn the_builtin_policy_is_valid() {
    let p = parse(BUILTIN, "builtin").expect("valid");
    assert_eq!(p.services.len(), 7);
    assert_eq!(p.flows.len(), 6);
}

#[test]
fn unknown_keys_are_errors_with_their_position() {
    let src = format!("{HOST}[ssh]\nallow = \"public\"\nprot = 22\n");
    let e = one_error(&src);
    assert!(e.starts_with("5:1 unknown field `prot`"), "{e}");
}

#[test]
fn syntax_errors_name_line_and_column() {
    let e = one_error("[host]\npublic_interfaces = [\"eth0\"\n");
    assert!(e.starts_with("2:"), "{e}");
}

#[test]
fn wrong_types_say_what_was_expected() {
    let src = format!("{HOST}[services.a]\nports = [{{ port = \"eighty\" }}]\n");
    let e = one_error(&src);
    assert!(e.starts_with("4:19"), "{e}");
    assert!(e.contains("u16"), "{e}");
}

#[test]
fn a_flow_to_an_unknown_service_is_named_with_a_suggestion() {
    let src = format!(
        "{HOST}[services.web]\nports = [{{ port = 80 }}]\n[services.db]\nports = [{{ port = 5432 }}]\n\
         [[flows]]\nfrom = \"web\"\nto = \"dbb\"\nport = 5432\n"
    );
    let d = parse(&src, "p.toml").unwrap_err();
    assert_eq!(d.0.len(), 1);
    assert_eq!((d.0[0].line, d.0[0].column), (9, 6));
    assert!(d.0[0].message.contains("unknown service `dbb`"));
    assert_eq!(d.0[0].hint.as_deref(), Some("did you mean `db`?"));
}

#[test]
fn a_flow_to_an_undeclared_port_is_refused() {
    let src = format!(
        "{HOST}[services.web]\n[services.db]\nports = [{{ port = 5432 }}]\n\
         [[flows]]\nfrom = \"web\"\nto = \"db\"\nport = 5433\n"
    );
    let e = one_error(&src);
    assert!(e.starts_with("9:8 db does not listen on 5433/tcp"), "{e}");
}

#[test]
fn two_services_on_one_host_port() {
    let src = format!(
        "{HOST}[services.a]\nports = [{{ port = 80, publish = 8080, expose = \"public\" }}]\n\
         [services.b]\nports = [{{ port = 81, publish = 8080, expose = \"public\" }}]\n"
    );
    let e = one_error(&src);
    assert!(
        e.contains("host port 8080/tcp is published by both a and b"),
        "{e}"
    );
    assert!(e.starts_with("6:"), "{e}");
}

#[test]
fn the_same_host_port_over_udp_and_tcp_is_fine() {
    let src = format!(
        "{HOST}[services.a]\nports = [{{ port = 53, publish = 53, expose = \"public\" }},\n\
         {{ port = 53, proto = \"udp\", publish = 53, expose = \"public\" }}]\n"
    );
    assert!(errors(&src).is_empty());
}

#[test]
fn a_service_on_the_ssh_port() {
    let src = format!(
        "{HOST}[ssh]\nallow = \"public\"\n[services.a]\nports = [{{ port = 22, publish = 22, expose = \"public\" }}]\n"
    );
    assert!(one_error(&src).contains("published by both ssh and a"));
}

#[test]
fn a_published_port_marked_internal() {
    let src = format!(
        "{HOST}[services.a]\nports = [{{ port = 80, publish = 80, expose = \"internal\" }}]\n"
    );
    let e = one_error(&src);
    assert!(e.contains("published but marked internal"), "{e}");
}

#[test]
fn an_exposure_without_publish_contradicts_itself() {
    let src =
        format!("{HOST}[services.a]\nports = [{{ port = 80, expose = \"public\" }}]\n");
    assert!(one_error(&src).contains("exposed as public but not published"));
}

#[test]
fn a_published_port_must_say_who_reaches_it() {
    let src = format!("{HOST}[services.a]\nports = [{{ port = 80, publish = 80 }}]\n");
    assert!(one_error(&src).contains("does not say who may reach it"));
}

#[test]
fn the_same_port_listed_twice_contradicts() {
    let src = format!(
        "{HOST}[groups]\ng = [\"192.0.2.0/24\"]\n[services.a]\nports = [\
         {{ port = 80, publish = 80, expose = \"public\" }},\n\
         {{ port = 80, publish = 8080, expose = [\"g\"] }}]\n"
    );
    assert!(one_error(&src).contains("lists port 80/tcp twice"));
}

#[test]
fn empty_and_unknown_groups() {
    let src = format!("{HOST}[groups]\nadmin = []\n[ssh]\nallow = [\"admins\"]\n");
    let e = errors(&src);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].starts_with("4:9 group `admin` is empty"), "{e:#?}");
    assert!(e[1].starts_with("6:10 unknown group `admins`"), "{e:#?}");
}

#[test]
fn host_bits_and_garbage_addresses() {
    let src = format!(
        "{HOST}[groups]\na = [\"10.0.0.1/8\", \"300.1.1.1\", \"2001:db8::/32\"]\n"
    );
    let d = parse(&src, "p.toml").unwrap_err();
    assert_eq!(d.0.len(), 2);
    assert_eq!(d.0[0].hint.as_deref(), Some("did you mean `10.0.0.0/8`?"));
    assert_eq!(d.0[0].column, 6);
    assert!(d.0[1].message.contains("`300.1.1.1` is not an IP address"));
    assert_eq!(d.0[1].column, 20);
}

#[test]
fn rates_must_parse() {
    let src = format!("{HOST}[ssh]\nallow = \"public\"\nrate = \"ten per minute\"\n");
    let e = one_error(&src);
    assert!(e.starts_with("5:8 `ten per minute` is not a rate"), "{e}");
}

#[test]
fn ssh_cannot_be_internal() {
    let src = format!("{HOST}[ssh]\nallow = \"loopback\"\n");
    assert!(one_error(&src).contains("ssh.allow cannot be `loopback`"));
}

#[test]
fn public_interfaces_are_required() {
    assert!(one_error("[ssh]\nallow = \"public\"\n").contains("public_interfaces"));
}

#[test]
fn every_error_is_reported_in_one_run() {
    let src = "[host]\npublic_interfaces = [\"eth0 with spaces\"]\n[groups]\nx = []\n\
               [ssh]\nallow = [\"nobody\"]\nport = 0\n";
    assert_eq!(errors(src).len(), 4, "{:#?}", errors(src));
}

#[test]
fn the_rendered_error_shows_the_line_and_a_caret() {
    let src = format!("{HOST}[ssh]\nallow = [\"adm\"]\n");
    let d = parse(&src, "site.toml").unwrap_err();
    let shown = d.to_string();
    assert!(shown.contains("--> site.toml:4:10"), "{shown}");
    assert!(shown.contains("4 | allow = [\"adm\"]"), "{shown}");
    assert!(shown.contains("^^^^^"), "{shown}");
}

#[test]
fn the_schema_knows_every_top_level_key_and_refuses_others() {
    let schema: serde_json::Value =
        serde_json::from_str(&palisade_policy::json_schema()).expect("json");
    let props = schema["properties"].as_object().expect("properties");
    for key in [
        "version", "host", "groups", "ssh", "icmp", "logging", "defaults", "networks",
        "services", "flows",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
}

#[test]
fn a_zero_burst_is_refused() {
    let src =
        format!("{HOST}[ssh]\nallow = \"public\"\nrate = \"5/minute\"\nburst = 0\n");
    let e = one_error(&src);
    assert!(e.starts_with("6:9 `burst` must be at least 1"), "{e}");
}

#[test]
fn non_utf8_bytes_are_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("palisade-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("p.toml");
    std::fs::write(&path, b"[host]\npublic_interfaces = [\"eth0\xff\"]\n")
        .expect("write");
    let err = palisade_policy::load(&path).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert!(err.contains("p.toml:2:27"), "{err}");
    assert!(err.contains("not valid UTF-8 (byte 0xff)"), "{err}");
}

#[test]
fn an_unknown_exposure_is_one_error() {
    let src = format!("{HOST}[services.a]\nports = [{{ port = 80, publish = 80, expose = \"everyone\" }}]\n");
    assert!(one_error(&src).contains("unknown exposure `everyone`"));
    let src = format!("{HOST}[ssh]\nallow = \"admin\"\n");
    assert!(one_error(&src).contains("unknown exposure `admin`"));
}

#[test]
fn public_in_a_list_gets_a_hint() {
    let d = parse(&format!("{HOST}[ssh]\nallow = [\"public\"]\n"), "p.toml").unwrap_err();
    assert_eq!(
        d.0[0].hint.as_deref(),
        Some("`public` is written as a plain string: \"public\"")
    );
}
