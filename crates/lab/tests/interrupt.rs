//! Ctrl-C in the middle of a lab: `run` returns an error and nothing of
//! the lab is left behind. Its own test binary, because the interrupt flag
//! is process-wide. Needs root and dockerd; skipped otherwise.

use std::path::Path;
use std::thread;
use std::time::Duration;

use palisade_lab::{Enforce, LabOptions};

#[test]
fn interrupted_lab_tears_everything_down() {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines().any(|l| {
                l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")
            })
        })
        .unwrap_or(false);
    let dockerd = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("dockerd").is_file()));
    if !root || !dockerd || !Path::new("/bin/busybox").is_file() {
        eprintln!("skipped: needs root, dockerd and /bin/busybox");
        return;
    }

    // Interrupt once dockerd is probably up and containers are starting.
    let stopper = thread::spawn(|| {
        thread::sleep(Duration::from_secs(4));
        palisade_lab::interrupt();
    });
    let opts = LabOptions {
        agent_exe: Some(env!("CARGO_BIN_EXE_palisade-lab-agent").into()),
        enforce: Enforce::Nothing,
        ..LabOptions::default()
    };
    let result = palisade_lab::run(opts);
    stopper.join().expect("stopper thread");
    let err = result.expect_err("an interrupted lab is an error");
    assert!(format!("{err:#}").contains("interrupted"), "{err:#}");

    let mine = format!("pl{}", std::process::id());
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&mine))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    // No child of ours (dockerd, agents) is left.
    let me = std::process::id().to_string();
    let children: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let after = stat.rsplit(')').next().unwrap_or("");
            let mut f = after.split_whitespace();
            let state = f.next().unwrap_or("");
            f.next() == Some(me.as_str()) && state != "Z"
        })
        .collect();
    let docker_left = !children.is_empty();
    assert!(!docker_left, "children left: {children:?}");
}
