//! `init --from-compose` gives a policy that passes `check`, for every
//! shared compose file, and keeps what the compose file does.

mod shared;

use palisade_analysis::{compose, init};
use palisade_policy::Exposure;

fn generate(name: &str) -> palisade_policy::Policy {
    let path = shared::dir("compose").join(name);
    let text = std::fs::read_to_string(&path).expect("shared compose file");
    let file = compose::parse(&text, name).expect("parses");
    let policy = init::policy_from_compose(&file, name);
    palisade_policy::parse(&policy, "generated.toml").unwrap_or_else(|e| {
        panic!("{name}: generated policy fails check:\n{e}\n---\n{policy}")
    })
}

#[test]
fn every_shared_compose_file_gives_a_valid_policy() {
    for name in [
        "freqtrade-docker-compose.yml",
        "hummingbot-docker-compose.yml",
        "jesse-project-template-docker-compose.yml",
        "n8n-hosting-withPostgres-docker-compose.yml",
        "octobot-docker-compose.yml",
    ] {
        generate(name);
    }
}

#[test]
fn loopback_bindings_and_dependencies_are_kept() {
    let p = generate("freqtrade-docker-compose.yml");
    let port = &p.services["freqtrade"].ports[0];
    assert_eq!((port.port, port.publish), (8080, Some(8080)));
    assert_eq!(port.expose, Exposure::Loopback);

    let p = generate("n8n-hosting-withPostgres-docker-compose.yml");
    assert_eq!(p.services["n8n"].ports[0].expose, Exposure::Public);
    // n8n depends on postgres, but the compose file names no postgres
    // port: no flow is invented. n8n-runner depends on n8n, whose port
    // 5678 is known.
    let flows: Vec<String> = p.flows.iter().map(|f| f.to_string()).collect();
    assert_eq!(flows, ["n8n-runner -> n8n:5678/tcp"]);

    let p = generate("octobot-docker-compose.yml");
    let port = &p.services["octobot"].ports[0];
    assert_eq!((port.port, port.publish), (5001, Some(80)));
}

#[test]
fn labels_choose_the_exposure() {
    let text = "services:\n  web:\n    ports: [\"80:80\"]\n    labels:\n      palisade.expose: office\n  \
                api:\n    expose: [\"8080\"]\n  db:\n    ports: [\"5432:5432\"]\n    labels: [\"palisade.expose=internal\"]\n    depends_on: [api]\n";
    let file = compose::parse(text, "c.yml").expect("parses");
    let policy = init::policy_from_compose(&file, "c.yml");
    let p = palisade_policy::parse(&policy, "g.toml").expect("valid");
    assert_eq!(
        p.services["web"].ports[0].expose,
        Exposure::Groups(vec!["office".into()])
    );
    assert_eq!(p.services["db"].ports[0].publish, None);
    assert_eq!(p.flows.len(), 1);
    assert_eq!(p.flows[0].to, "api");
    assert_eq!(p.flows[0].port, 8080);
}
