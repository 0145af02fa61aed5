//! Where the shared test data is: `PALISADE_SHARED` if set, else the
//! `shared/` folder beside the repository (as CI lays it out).

use std::path::{Path, PathBuf};

pub fn dir(sub: &str) -> PathBuf {
    let root = match std::env::var_os("PALISADE_SHARED") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let dir = root.join(sub);
    assert!(
        dir.is_dir(),
        "the shared test data is missing: {} does not exist (put the shared/ folder \
         beside the repository, or set PALISADE_SHARED to it)",
        dir.display()
    );
    dir
}
