//! What the policy's names stand for on a running host.
//!
//! The ruleset's structure comes from the policy alone; the container
//! addresses and bridge interfaces come from Docker at apply time and only
//! fill sets. Compiling with an empty [`Resolution`] gives the same rules
//! with empty service sets, which match nothing: fail closed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Per policy service name.
    pub services: BTreeMap<String, ResolvedService>,
    /// Bridge interfaces of the Docker networks the services are on.
    pub bridges: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedService {
    /// Container names (or ids) that make up the service.
    pub containers: Vec<String>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}
