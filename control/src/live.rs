//! Live changes from the control socket and SIGHUP: each request becomes a desired topology,
//! validated exactly as a topology file is (a refusal names the key and changes nothing), and
//! the running switch is brought to it through the one [`crate::running::diff`].

use serde::Serialize;

use crate::ctl::{Refusal, Request};
use crate::running::{Diff, Running};
use crate::topology::Topology;
use crate::topology_edit::{self as topology, EditError};

/// What a change did, as the control socket reports it.
#[derive(Debug, Serialize)]
struct Changed {
    added: Vec<String>,
    removed: Vec<String>,
    reconfigured: Vec<String>,
    bonds_rebuilt: Vec<String>,
}

impl From<&Diff> for Changed {
    fn from(d: &Diff) -> Changed {
        let rebuilt = |name: &String| d.ports_added.contains(name) && d.ports_removed.contains(name);
        Changed {
            added: d.ports_added.iter().filter(|n| !rebuilt(n)).cloned().collect(),
            removed: d.ports_removed.iter().filter(|n| !rebuilt(n)).cloned().collect(),
            reconfigured: d
                .ports_reconfigured
                .iter()
                .chain(d.ports_added.iter().filter(|n| rebuilt(n)))
                .cloned()
                .collect(),
            bonds_rebuilt: d.bonds_rebuilt.clone(),
        }
    }
}

/// Makes the live change `request` asks for (`reload` aside: see [`reload`]).
pub fn change(running: &mut Running, request: &Request) -> Result<serde_json::Value, Refusal> {
    let refused = |e: EditError| Refusal::refused(e.to_string());
    let current = &running.topology;
    let desired = match request {
        Request::Save {} => return Ok(serde_json::json!({ "topology": current.to_toml() })),
        Request::Reload {} => return reload(running),
        Request::PortAdd { name, kind, settings } => {
            let settings = topology::parse_assignments(settings).map_err(refused)?;
            current.with_port_added(name, kind, &settings).map_err(refused)?
        }
        Request::PortDel { name } => current.with_port_removed(name).map_err(refused)?,
        Request::PortSet { name, settings } => {
            let settings = topology::parse_assignments(settings).map_err(refused)?;
            if settings.is_empty() {
                return Err(Refusal::refused("port set: give at least one KEY=VALUE"));
            }
            current.with_port_set(name, &settings).map_err(refused)?
        }
        Request::VxlanRemoteAdd { port, ip } => current.with_vxlan_remote(port, ip, true).map_err(refused)?,
        Request::VxlanRemoteDel { port, ip } => current.with_vxlan_remote(port, ip, false).map_err(refused)?,
        Request::Takeover {} => {
            return Err(Refusal::refused("a takeover speaks its own protocol: run vswitchd --takeover"));
        }
        _ => return Err(Refusal::refused("not a live change")),
    };
    bring_to(running, &desired)
}

/// Brings the running switch to `desired`.
fn bring_to(running: &mut Running, desired: &Topology) -> Result<serde_json::Value, Refusal> {
    match running.apply(desired) {
        Ok(d) => serde_json::to_value(Changed::from(&d)).map_err(|e| Refusal::failed(e.to_string())),
        Err(errors) => Err(Refusal::failed(errors.join("; "))),
    }
}

/// Re-reads the topology file and reconciles the ports it describes; ports added with
/// `port add` that the file does not name stay. A file that does not validate, or that changes
/// the `[bridge]` table (which needs a restart), is refused and nothing changes.
pub fn reload(running: &mut Running) -> Result<serde_json::Value, Refusal> {
    let path = running.topology.path.clone();
    let file = Topology::load(&path).map_err(|e| Refusal::refused(e.to_string()))?;
    if file.bridge != running.topology.bridge {
        return Err(Refusal::refused(format!(
            "{}: key `bridge`: the [bridge] table cannot change while vswitchd runs; restart it to apply",
            path.display()
        )));
    }
    let desired = merge_live_ports(&file, &running.topology, &running.from_file);
    // The merge must itself be a valid topology (a live port may clash with the file's).
    let desired = Topology::parse(&path, &desired.to_toml()).map_err(|e| {
        Refusal::refused(format!("{}: conflicts with a port added while running: {}", path.display(), e.message))
    })?;
    let result = bring_to(running, &desired);
    running.from_file = file.ports.iter().map(|p| p.name.clone()).collect();
    result
}

/// `file`, plus the ports of `running` that were added live (not in `from_file`) and that the
/// file does not name, with the namespaces they need.
fn merge_live_ports(file: &Topology, running: &Topology, from_file: &std::collections::BTreeSet<String>) -> Topology {
    let mut desired = file.clone();
    for port in &running.ports {
        if from_file.contains(&port.name) || desired.ports.iter().any(|p| p.name == port.name) {
            continue;
        }
        if let Some(ns) = port.kind.netns() {
            if !desired.netns.iter().any(|n| n.name == ns) {
                if let Some(spec) = running.netns.iter().find(|n| n.name == ns) {
                    desired.netns.push(spec.clone());
                }
            }
        }
        desired.ports.push(port.clone());
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_reload_keeps_live_ports_the_file_does_not_name_and_drops_the_files_old_ones() {
        let parse = |s: &str| Topology::parse(Path::new("t.toml"), s).unwrap();
        let old_file = "[bridge]\nname = \"b\"\n[[port]]\nname = \"a\"\ntype = \"internal\"\n";
        let running = parse(
            "[bridge]\nname = \"b\"\n[[netns]]\nname = \"c\"\n[[port]]\nname = \"a\"\ntype = \"internal\"\n\
             [[port]]\nname = \"live\"\ntype = \"veth\"\nnetns = \"c\"\n",
        );
        let from_file = parse(old_file).ports.iter().map(|p| p.name.clone()).collect();
        let new_file = parse("[bridge]\nname = \"b\"\n[[port]]\nname = \"z\"\ntype = \"internal\"\n");
        let merged = merge_live_ports(&new_file, &running, &from_file);
        let names: Vec<&str> = merged.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["z", "live"]);
        assert_eq!(merged.netns.len(), 1, "the live port's namespace comes along");
    }
}
