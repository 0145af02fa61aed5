//! The lab agent as a program of its own, for the lab's tests: the same as
//! `palisade lab-agent ...`, so tests can run a lab without the CLI.
//!
//!     palisade-lab-agent lab-agent probe tcp 192.0.2.1:80

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match palisade_lab::agent_main(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            2
        }
    };
    std::process::exit(code);
}
