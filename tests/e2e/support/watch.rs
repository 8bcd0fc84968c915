//! An independent subscriber on a master's event publisher: what the master relayed, seen from
//! outside saltgate.

use std::time::Duration;

use saltgate::config::Config;
use saltgate::salt::bus::ipc::{IpcBus, IpcBusConfig};

/// A bus connected to the publisher of the master `config` names (waits up to 10 s).
pub(crate) async fn master_bus(config: &Config) -> IpcBus {
    let (publisher, puller) = config.master.bus_endpoints();
    let watcher = IpcBus::start(IpcBusConfig::new(publisher, puller));
    watcher
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    watcher
}
