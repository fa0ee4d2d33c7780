//! `vswitchctl`: asks a running vswitchd over its control socket and prints the answer as a
//! table, or as JSON with `--json`. Like any Unix filter it ends quietly when its reader goes
//! away (`vswitchctl fdb show | head -1`): see [`vswitchd_control::stdout`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use serde::de::DeserializeOwned;
use vswitchd_control::ctl::{
    self, BondShowResult, FdbResult, FlushResult, MdbShowResult, PortShowResult, Request, ShowResult, StpShowResult,
    VxlanShowResult,
};

use vswitchd_control::capture;
use vswitchd_control::dot;
use vswitchd_control::outln;
use vswitchd_control::stdout::print as print_to_stdout;
use vswitchd_control::topology::Topology;

/// vswitchctl: shows and changes a running vswitchd over its control socket.
///
/// The bridge, the forwarding database, ports and their counters, bonds, tunnels, the spanning
/// tree, multicast groups; live port changes, reload and save. Tables, or JSON with --json.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The daemon's control socket (default: the only one in /run/vswitchd).
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The bridge, its ports, their kind and state.
    Show {
        /// Print the topology (namespaces, ports, VLANs, bonds, tunnels and their remotes) as
        /// a Graphviz graph: `vswitchctl show --dot | dot -Tsvg > switch.svg`.
        #[arg(long)]
        dot: bool,
    },
    /// The forwarding database.
    Fdb {
        #[command(subcommand)]
        command: FdbCommand,
    },
    /// Port counters.
    Port {
        #[command(subcommand)]
        command: PortCommand,
    },
    /// Bonds.
    Bond {
        #[command(subcommand)]
        command: BondCommand,
    },
    /// VXLAN tunnel ports.
    Vxlan {
        #[command(subcommand)]
        command: VxlanCommand,
    },
    /// The spanning tree.
    Stp {
        #[command(subcommand)]
        command: StpCommand,
    },
    /// The multicast (IGMP/MLD snooping) database.
    Mdb {
        #[command(subcommand)]
        command: MdbCommand,
    },
    /// Every counter and state in the Prometheus text format (what `vswitchd --metrics`
    /// serves at /metrics).
    Metrics,
    /// Per-port rates (frames/s, bits/s, drops/s by reason) and FDB activity, refreshed every
    /// interval; plain lines when stdout is not a terminal.
    Top {
        /// Seconds between refreshes (at least 0.1).
        #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
        /// Stop after this many refreshes (default: run until interrupted).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Run a frame through the pipeline as if received on PORT and print every decision;
    /// nothing is sent, learned or counted.
    Trace {
        /// The ingress port.
        port: String,
        /// The frame: fields (dst=MAC,src=MAC,vlan=10,ipv4,tcp,dport=80; also pcp, ethertype,
        /// arp, ipv6, udp, icmp, sip, dip, sport, len) or its bytes in hex.
        #[arg(num_args = 1.., required = true, allow_hyphen_values = true)]
        frame: Vec<String>,
    },
    /// Re-read the topology file and apply the difference (as SIGHUP does).
    Reload,
    /// Print the running topology as a topology file.
    Save,
    /// Capture the frames of ports as pcapng (`-w - | tcpdump -r -`): inbound after ingress
    /// VLAN translation, outbound before egress tagging. Prints a summary (frames captured,
    /// lost to a slow reader) on stderr at the end.
    Capture {
        /// The ports (one pcapng interface each).
        #[arg(required = true)]
        ports: Vec<String>,
        /// Dropped frames too, each with its drop reason as a packet comment.
        #[arg(long)]
        drops: bool,
        /// Stop after N frames (default: until interrupted or the reader goes away).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Where to write the pcapng: a file, or `-` for standard output.
        #[arg(short = 'w', value_name = "FILE", default_value = "-")]
        write: String,
    },
}

#[derive(Debug, Subcommand)]
enum StpCommand {
    /// Bridge id, root id, root port; per port role, state, cost.
    Show,
}

#[derive(Debug, Subcommand)]
enum MdbCommand {
    /// Groups per VLAN with their member ports: VLAN GROUP PORTS AGE; then the router ports.
    Show,
}

#[derive(Debug, Subcommand)]
enum VxlanCommand {
    /// VNIs, local address, remotes with counters, learned remote MACs.
    Show,
    /// Add or remove a remote VTEP.
    Remote {
        #[command(subcommand)]
        command: RemoteCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RemoteCommand {
    /// Add remote IP to VXLAN port PORT.
    Add {
        /// The VXLAN port.
        port: String,
        /// The remote's underlay address.
        ip: String,
    },
    /// Remove remote IP from VXLAN port PORT.
    Del {
        /// The VXLAN port.
        port: String,
        /// The remote's underlay address.
        ip: String,
    },
}

#[derive(Debug, Subcommand)]
enum BondCommand {
    /// Mode, members, link states, the active member, counters per member.
    Show {
        /// Only this bond.
        bond: Option<String>,
    },
    /// Make MEMBER the active member of active-backup bond BOND (until its link fails).
    SetActive {
        /// The bond.
        bond: String,
        /// The member.
        member: String,
    },
}

#[derive(Debug, Subcommand)]
enum FdbCommand {
    /// List entries: MAC VLAN PORT TYPE AGE.
    Show {
        /// Only this VLAN.
        #[arg(long)]
        vlan: Option<u16>,
        /// Only this port.
        #[arg(long)]
        port: Option<String>,
    },
    /// Add a static entry.
    Add {
        /// The MAC address.
        mac: String,
        /// The port.
        port: String,
        /// The VLAN (default 0).
        #[arg(long)]
        vlan: Option<u16>,
        /// For a vxlan port: the remote VTEP the MAC lives behind.
        #[arg(long)]
        remote: Option<String>,
    },
    /// Delete an entry.
    Del {
        /// The MAC address.
        mac: String,
        /// The VLAN (default 0).
        #[arg(long)]
        vlan: Option<u16>,
    },
    /// Remove learned entries.
    Flush {
        /// Only this port's.
        #[arg(long)]
        port: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PortCommand {
    /// Frames, bytes and drops by reason.
    Show {
        /// Only this port.
        port: Option<String>,
    },
    /// Add a port while the switch runs: KEY=VALUE as in a [[port]] table (VALUE a TOML value
    /// or a bare word: netns=red address=10.0.0.5/24 vlan=10 trunk=[10,20] device=tap-vm7).
    Add {
        /// The port's name (its kernel interface name).
        name: String,
        /// tap | veth | netdev | internal | vxlan | bond | team
        #[arg(value_name = "TYPE")]
        kind: String,
        /// KEY=VALUE settings.
        #[arg(value_parser = key_value)]
        settings: Vec<String>,
    },
    /// Remove a port; what vswitchd created for it goes with it.
    Del {
        /// The port.
        name: String,
    },
    /// Change a port's settings: vlan, trunk, native_vlan, vlan_mode, mtu, master, ...
    /// (KEY= removes a key).
    Set {
        /// The port.
        name: String,
        /// KEY=VALUE settings.
        #[arg(required = true, value_parser = key_value)]
        settings: Vec<String>,
    },
}

/// A `KEY=VALUE` setting of `port add` and `port set` (`KEY=` removes a setting); the daemon
/// judges the key and the value, this only refuses what cannot be one (`trunk 10`) as a usage
/// error, before connecting.
fn key_value(word: &str) -> Result<String, String> {
    match word.split_once('=') {
        Some((key, _)) if !key.is_empty() && !key.contains(char::is_whitespace) => Ok(word.to_string()),
        _ => Err(format!("{word:?} is not KEY=VALUE")),
    }
}

fn find_socket() -> Result<PathBuf, String> {
    let dir = Path::new(ctl::RUN_DIR);
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            format!("no control socket found in {} ({e}): is vswitchd running? (or give --socket)", dir.display())
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ctl"))
        .collect();
    sockets.sort();
    match sockets.len() {
        1 => Ok(sockets.remove(0)),
        0 => Err(format!("no control socket in {}: is vswitchd running? (or give --socket)", dir.display())),
        _ => Err(format!(
            "several vswitchd control sockets; choose one with --socket: {}",
            sockets.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Prints rows as left-aligned columns.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("unexpected reply from vswitchd: {e}"))
}

fn render(request: &Request, value: serde_json::Value) -> Result<(), String> {
    match request {
        Request::Show {} => {
            let show: ShowResult = decode(value)?;
            let b = &show.bridge;
            outln!(
                "bridge {}: fdb {} entries ({} learned, max {}), aging {}s; learned {}, moved {}, expired {}, evicted {}, \
                 pinned for flapping {}",
                b.name,
                b.fdb_entries,
                b.fdb_learned_entries,
                b.fdb_max_entries,
                b.fdb_aging_secs,
                b.fdb_learned,
                b.fdb_moved,
                b.fdb_expired,
                b.fdb_evicted,
                b.fdb_move_damped
            );
            if !b.busy_poll.is_empty() {
                let policy = match b.busy_poll_window_us {
                    Some(us) => format!("window {us} µs"),
                    None => b.busy_poll.clone(),
                };
                outln!(
                    "busy polling {policy}: {} polls instead of sleeping, {} back-offs on a contended core",
                    b.busy_poll_spins,
                    b.busy_poll_backoffs
                );
            }
            if b.threads > 1 {
                let frames: Vec<String> = b.worker_rx_frames.iter().map(u64::to_string).collect();
                outln!(
                    "{} worker threads, frames received by each: {}; FDB updates lost between them: {}",
                    b.threads,
                    frames.join(" "),
                    b.fdb_sync_lost
                );
            }
            let rows: Vec<Vec<String>> = show
                .ports
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.kind.clone(),
                        p.netns.clone().unwrap_or_else(|| "-".into()),
                        p.mtu.to_string(),
                        p.link.clone(),
                        p.link_changes.to_string(),
                        p.vlan.clone(),
                        p.offloads.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(&["PORT", "TYPE", "NETNS", "MTU", "LINK", "CHANGES", "VLAN", "OFFLOADS"], &rows);
        }
        Request::FdbShow { .. } => {
            let fdb: FdbResult = decode(value)?;
            let rows: Vec<Vec<String>> = fdb
                .entries
                .iter()
                .map(|e| {
                    let age = e.age_secs.map_or_else(|| "-".to_string(), |a| a.to_string());
                    vec![e.mac.clone(), e.vlan.to_string(), e.port.clone(), e.kind.clone(), age]
                })
                .collect();
            print_table(&["MAC", "VLAN", "PORT", "TYPE", "AGE"], &rows);
        }
        Request::PortShow { .. } => {
            let ports: PortShowResult = decode(value)?;
            let rows: Vec<Vec<String>> = ports
                .ports
                .iter()
                .map(|p| {
                    let drops: Vec<String> =
                        p.drops.iter().filter(|(_, n)| **n > 0).map(|(r, n)| format!("{r}={n}")).collect();
                    vec![
                        p.name.clone(),
                        p.rx_frames.to_string(),
                        p.rx_bytes.to_string(),
                        p.tx_frames.to_string(),
                        p.tx_bytes.to_string(),
                        if drops.is_empty() { "0".into() } else { drops.join(",") },
                    ]
                })
                .collect();
            print_table(&["PORT", "RX_FRAMES", "RX_BYTES", "TX_FRAMES", "TX_BYTES", "DROPS"], &rows);
        }
        Request::MdbShow {} => {
            let mdb: MdbShowResult = decode(value)?;
            render_mdb(&mdb);
        }
        Request::Metrics {} => {
            let text: String = decode(value)?;
            print_to_stdout(format_args!("{text}"));
        }
        Request::Trace { .. } => {
            let trace: ctl::TraceResult = decode(value)?;
            render_trace(&trace);
        }
        Request::FdbFlush { .. } => {
            let flushed: FlushResult = decode(value)?;
            outln!("removed {} learned entries", flushed.removed);
        }
        Request::BondShow { .. } => {
            let result: BondShowResult = decode(value)?;
            for (i, b) in result.bonds.iter().enumerate() {
                if i > 0 {
                    outln!();
                }
                let mut line = format!("{}: {}", b.name, b.mode);
                if let Some(policy) = &b.xmit_hash_policy {
                    line.push_str(&format!(" ({policy})"));
                }
                line.push_str(&format!(
                    ", miimon {} ms, updelay {} ms, downdelay {} ms",
                    b.miimon_ms, b.updelay_ms, b.downdelay_ms
                ));
                if let Some(p) = &b.primary {
                    line.push_str(&format!(", primary {p}"));
                }
                if let Some(a) = &b.active {
                    line.push_str(&format!(", active {a}"));
                }
                line.push_str(&format!(", failovers {}, announcements {}", b.failovers, b.announcements));
                outln!("{line}");
                let rows: Vec<Vec<String>> = b
                    .members
                    .iter()
                    .map(|m| {
                        let drops: Vec<String> = m.drops.iter().map(|(r, n)| format!("{r}={n}")).collect();
                        vec![
                            m.name.clone(),
                            m.link.clone(),
                            if m.active { "*".into() } else { String::new() },
                            m.rx_frames.to_string(),
                            m.rx_bytes.to_string(),
                            m.tx_frames.to_string(),
                            m.tx_bytes.to_string(),
                            if drops.is_empty() { "0".into() } else { drops.join(",") },
                            m.lacp.as_ref().map_or_else(
                                || "-".to_string(),
                                |l| match &l.partner_system {
                                    Some(p) => format!("{} partner {p}", l.actor_state.join(",")),
                                    None => l.actor_state.join(","),
                                },
                            ),
                        ]
                    })
                    .collect();
                print_table(
                    &["MEMBER", "LINK", "ACTIVE", "RX_FRAMES", "RX_BYTES", "TX_FRAMES", "TX_BYTES", "DROPS", "LACP"],
                    &rows,
                );
            }
        }
        Request::StpShow {} => print_stp(&decode(value)?),
        Request::VxlanShow {} => {
            let result: VxlanShowResult = decode(value)?;
            for (i, t) in result.tunnels.iter().enumerate() {
                if i > 0 {
                    outln!();
                }
                let vnis: Vec<String> = t
                    .vnis
                    .iter()
                    .map(|v| match v.vlan {
                        Some(vlan) => format!("{} (VLAN {vlan})", v.vni),
                        None => v.vni.to_string(),
                    })
                    .collect();
                let drops: Vec<String> = t.drops.iter().map(|(r, n)| format!("{r}={n}")).collect();
                outln!(
                    "{}: VNI {}, local {} port {}, learning {}{}",
                    t.name,
                    vnis.join(", "),
                    t.local,
                    t.dst_port,
                    if t.learning { "on" } else { "off" },
                    if drops.is_empty() { String::new() } else { format!(", drops {}", drops.join(",")) }
                );
                let s = &t.stats;
                outln!(
                    "  remotes learned {}, expired {}, evicted {}; MACs learned {}, moved {}, expired {}, evicted {}",
                    s.remotes_learned,
                    s.remotes_expired,
                    s.remotes_evicted,
                    s.macs_learned,
                    s.macs_moved,
                    s.macs_expired,
                    s.macs_evicted
                );
                if s.too_big_replies + s.too_big_replies_limited + s.neigh_suppressed > 0 {
                    outln!(
                        "  too-big replies sent {}, rate-limited {}; ARP/ND requests answered locally {}",
                        s.too_big_replies,
                        s.too_big_replies_limited,
                        s.neigh_suppressed
                    );
                }
                let rows: Vec<Vec<String>> = t
                    .remotes
                    .iter()
                    .map(|r| {
                        vec![
                            r.address.clone(),
                            if r.configured { "configured".into() } else { "learned".into() },
                            r.rx_packets.to_string(),
                            r.rx_bytes.to_string(),
                            r.tx_packets.to_string(),
                            r.tx_bytes.to_string(),
                        ]
                    })
                    .collect();
                print_table(&["REMOTE", "TYPE", "RX_PACKETS", "RX_BYTES", "TX_PACKETS", "TX_BYTES"], &rows);
                if !t.macs.is_empty() {
                    outln!();
                    let rows: Vec<Vec<String>> = t
                        .macs
                        .iter()
                        .map(|m| {
                            let age = m.age_secs.map_or_else(|| "static".to_string(), |a| a.to_string());
                            vec![m.mac.clone(), m.vlan.to_string(), m.remote.clone(), age]
                        })
                        .collect();
                    print_table(&["MAC", "VLAN", "REMOTE", "AGE"], &rows);
                }
            }
        }
        Request::Save {} => {
            let text = value.get("topology").and_then(|t| t.as_str()).ok_or("vswitchd sent no topology")?;
            print_to_stdout(format_args!("{text}"));
        }
        Request::PortAdd { .. }
        | Request::PortDel { .. }
        | Request::PortSet { .. }
        | Request::VxlanRemoteAdd { .. }
        | Request::VxlanRemoteDel { .. }
        | Request::Reload {}
        | Request::Capture { .. }
        | Request::Takeover {} => {
            for (what, key) in [
                ("added", "added"),
                ("removed", "removed"),
                ("changed", "reconfigured"),
                ("rebuilt bond", "bonds_rebuilt"),
            ] {
                for name in value.get(key).and_then(|v| v.as_array()).into_iter().flatten() {
                    outln!("{what} {}", name.as_str().unwrap_or("?"));
                }
            }
        }
        Request::FdbAdd { .. } | Request::FdbDel { .. } | Request::BondSetActive { .. } => {}
    }
    Ok(())
}

/// `mdb show` as a table: one row per (VLAN, group), its member ports joined by commas, AGE
/// the seconds since the latest report of any of them; then the router ports.
/// Prints `trace`: one row per decision, then the verdict.
fn render_trace(trace: &ctl::TraceResult) {
    let rows: Vec<Vec<String>> = trace
        .steps
        .iter()
        .map(|s| {
            vec![s.stage.clone(), s.port.clone().unwrap_or_else(|| "-".into()), s.result.clone(), s.detail.clone()]
        })
        .collect();
    print_table(&["STEP", "PORT", "RESULT", "DETAIL"], &rows);
    if trace.steps_lost > 0 {
        outln!("({} more steps not recorded)", trace.steps_lost);
    }
    match (trace.verdict.as_str(), &trace.drop_reason) {
        ("drop", Some(reason)) => outln!("verdict: dropped on {} ({reason})", trace.port),
        ("bpdu", _) => outln!("verdict: taken by the spanning tree"),
        _ if trace.sent_to.is_empty() => outln!("verdict: sent nowhere"),
        _ => outln!("verdict: would be sent to {}", trace.sent_to.join(", ")),
    }
    outln!("(a trace: nothing was sent, learned or counted)");
}

fn render_mdb(mdb: &MdbShowResult) {
    if !mdb.snooping {
        outln!("multicast snooping is off: every multicast frame floods");
        return;
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut age = u64::MAX;
    for (i, m) in mdb.members.iter().enumerate() {
        let same_group = i > 0 && mdb.members[i - 1].vlan == m.vlan && mdb.members[i - 1].group == m.group;
        match rows.last_mut() {
            Some(row) if same_group => {
                row[2].push(',');
                row[2].push_str(&m.port);
                age = age.min(m.age_secs);
                row[3] = age.to_string();
            }
            _ => {
                age = m.age_secs;
                rows.push(vec![m.vlan.to_string(), m.group.clone(), m.port.clone(), age.to_string()]);
            }
        }
    }
    print_table(&["VLAN", "GROUP", "PORTS", "AGE"], &rows);
    let routers: Vec<String> = mdb
        .routers
        .iter()
        .map(|r| match r.expires_secs {
            None => format!("{} (mrouter)", r.port),
            Some(s) => format!("{} (query, {s} s left)", r.port),
        })
        .collect();
    outln!("router ports: {}", if routers.is_empty() { "none".to_string() } else { routers.join(", ") });
    if mdb.querier {
        outln!("queries sent: {} general, {} group-specific", mdb.queries_sent, mdb.group_queries_sent);
    }
    if mdb.refused > 0 {
        outln!("joins refused (table full at {} groups): {}", mdb.max_groups, mdb.refused);
    }
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a number of seconds from 0.1 to 3600")),
    }
}

/// Asks for `request` and decodes the result.
fn ask<T: DeserializeOwned>(socket: &Path, request: &Request) -> Result<T, String> {
    let response = ctl::request(socket, request).map_err(|e| e.to_string())?;
    if !response.ok {
        return Err(response.error.unwrap_or_else(|| "vswitchd refused the request".into()));
    }
    decode(response.result.unwrap_or(serde_json::Value::Null))
}

/// `vswitchctl top`: polls `port show` and `show` every `interval` and prints the rates.
fn top(socket: Option<PathBuf>, interval: f64, count: Option<u64>) -> Result<(), String> {
    use std::time::{Duration, Instant};
    use vswitchd_control::top;
    let socket = match socket {
        Some(s) => s,
        None => find_socket()?,
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let sample = || -> Result<(PortShowResult, ShowResult, Instant), String> {
        let ports = ask(&socket, &Request::PortShow { port: None })?;
        let show = ask(&socket, &Request::Show {})?;
        Ok((ports, show, Instant::now()))
    };
    let mut before = sample()?;
    let mut shown = 0u64;
    while count.is_none_or(|n| shown < n) {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let after = sample()?;
        let elapsed = after.2.duration_since(before.2);
        let ports = top::port_rates(&before.0, &after.0, elapsed);
        let fdb = top::fdb_rates(&before.1.bridge, &after.1.bridge, elapsed);
        print_to_stdout(format_args!("{}", top::render(&after.1.bridge.name, elapsed, &ports, &fdb, terminal)));
        shown += 1;
        before = after;
    }
    Ok(())
}

/// `vswitchctl capture`: streams pcapng to FILE or standard output.
fn capture(socket: Option<PathBuf>, ports: Vec<String>, drops: bool, count: Option<u64>, write: &str) -> ExitCode {
    // SIGINT and SIGTERM end the capture cleanly: a thread waits for them and shuts down the
    // connection's sending side; the daemon then sends its summary.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    let _ = signals.thread_block();
    let stop = |stream: std::os::unix::net::UnixStream| {
        std::thread::spawn(move || {
            if signals.wait().is_ok() {
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
        });
    };
    let outcome = (|| -> Result<capture::Summary, capture::ClientError> {
        let socket = match socket {
            Some(s) => s,
            None => find_socket().map_err(|e| capture::ClientError::Io(std::io::Error::other(e)))?,
        };
        if write == "-" {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            capture::run_client(&socket, ports, drops, count, &mut out, stop)
        } else {
            let mut out = std::fs::File::create(write)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot create {write}: {e}")))?;
            capture::run_client(&socket, ports, drops, count, &mut out, stop)
        }
    })();
    match outcome {
        Ok(summary) => {
            eprintln!("vswitchctl: captured {} frames, lost {} (reader too slow)", summary.captured, summary.lost);
            ExitCode::SUCCESS
        }
        // The reader went away (`| tcpdump -c 5 -r -`): quietly, as any vswitchctl command.
        Err(capture::ClientError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(vswitchd_control::stdout::SIGPIPE_EXIT_STATUS as u8)
        }
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            let refused = matches!(e, capture::ClientError::Refused { refused: true, .. });
            ExitCode::from(if refused { 2 } else { 1 })
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Top { interval, count } = args.command {
        return match top(args.socket, interval, count) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vswitchctl: {e}");
                ExitCode::from(1)
            }
        };
    }
    let request = match args.command {
        Command::Capture { ports, drops, count, write } => return capture(args.socket, ports, drops, count, &write),
        Command::Top { .. } => unreachable!("answered above"),
        Command::Metrics => Request::Metrics {},
        Command::Show { dot: true } if args.json => {
            eprintln!("vswitchctl: show --dot prints a graph and --json prints JSON: give one of them");
            return ExitCode::from(2);
        }
        Command::Show { dot: true } => return print_dot(args.socket),
        Command::Show { dot: false } => Request::Show {},
        Command::Fdb { command } => match command {
            FdbCommand::Show { vlan, port } => Request::FdbShow { vlan, port },
            FdbCommand::Add { mac, port, vlan, remote } => Request::FdbAdd { mac, port, vlan, remote },
            FdbCommand::Del { mac, vlan } => Request::FdbDel { mac, vlan },
            FdbCommand::Flush { port } => Request::FdbFlush { port },
        },
        Command::Port { command: PortCommand::Show { port } } => Request::PortShow { port },
        Command::Port { command: PortCommand::Add { name, kind, settings } } => {
            Request::PortAdd { name, kind, settings }
        }
        Command::Port { command: PortCommand::Del { name } } => Request::PortDel { name },
        Command::Port { command: PortCommand::Set { name, settings } } => Request::PortSet { name, settings },
        Command::Vxlan { command: VxlanCommand::Remote { command: RemoteCommand::Add { port, ip } } } => {
            Request::VxlanRemoteAdd { port, ip }
        }
        Command::Vxlan { command: VxlanCommand::Remote { command: RemoteCommand::Del { port, ip } } } => {
            Request::VxlanRemoteDel { port, ip }
        }
        Command::Trace { port, frame } => {
            let frame = frame.join(" ");
            // A bad field is a bad command line: refused here, naming it.
            if let Err(e) = vswitchd_control::trace_frame::build(&frame) {
                eprintln!("vswitchctl: {e}");
                return ExitCode::from(2);
            }
            Request::Trace { port, frame }
        }
        Command::Reload => Request::Reload {},
        Command::Save => Request::Save {},
        Command::Bond { command: BondCommand::Show { bond } } => Request::BondShow { bond },
        Command::Vxlan { command: VxlanCommand::Show } => Request::VxlanShow {},
        Command::Stp { command: StpCommand::Show } => Request::StpShow {},
        Command::Mdb { command: MdbCommand::Show } => Request::MdbShow {},
        Command::Bond { command: BondCommand::SetActive { bond, member } } => Request::BondSetActive { bond, member },
    };
    let mut refused = false;
    let outcome = (|| -> Result<(), String> {
        let socket = match args.socket {
            Some(s) => s,
            None => find_socket()?,
        };
        let response = ctl::request(&socket, &request).map_err(|e| e.to_string())?;
        if !response.ok {
            refused = response.refused;
            return Err(response.error.unwrap_or_else(|| "vswitchd refused the request".into()));
        }
        let value = response.result.unwrap_or(serde_json::Value::Null);
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?);
            Ok(())
        } else {
            render(&request, value)
        }
    })();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            // A request refused as wrong changed nothing: the same status as a bad command line.
            ExitCode::from(if refused { 2 } else { 1 })
        }
    }
}

/// `show --dot`: asks for the running topology (`save`), link states (`show`), bonds (`bond
/// show`) and the tunnels' live remotes (`vxlan show`) and prints them as a Graphviz graph
/// ([`vswitchd_control::dot`]).
fn print_dot(socket: Option<PathBuf>) -> ExitCode {
    let outcome = (|| -> Result<(), String> {
        let socket = match socket {
            Some(s) => s,
            None => find_socket()?,
        };
        let ask = |request: &Request| -> Result<serde_json::Value, String> {
            let response = ctl::request(&socket, request).map_err(|e| e.to_string())?;
            if !response.ok {
                return Err(response.error.unwrap_or_else(|| "vswitchd refused the request".into()));
            }
            Ok(response.result.unwrap_or(serde_json::Value::Null))
        };
        let saved = ask(&Request::Save {})?;
        let text = saved.get("topology").and_then(|t| t.as_str()).ok_or("vswitchd sent no topology")?;
        let topology = Topology::parse(Path::new("(running topology)"), text)
            .map_err(|e| format!("vswitchd sent a topology this vswitchctl cannot read: {e}"))?;
        let show: ShowResult = decode(ask(&Request::Show {})?)?;
        let bonds: BondShowResult = decode(ask(&Request::BondShow { bond: None })?)?;
        let tunnels: VxlanShowResult = decode(ask(&Request::VxlanShow {})?)?;
        let live = dot::Live { ports: &show.ports, bonds: &bonds.bonds, tunnels: &tunnels.tunnels };
        print_to_stdout(format_args!("{}", dot::topology_dot(&topology, &live)));
        Ok(())
    })();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `stp show`.
fn print_stp(result: &StpShowResult) {
    let (Some(bridge), Some(root)) = (&result.bridge_id, &result.root_id) else {
        outln!("spanning tree: off (BPDUs are forwarded)");
        return;
    };
    outln!("spanning tree: {}", result.mode);
    outln!("bridge id  {bridge}");
    let this = if bridge == root { " (this bridge)" } else { "" };
    outln!("root id    {root}{this}");
    outln!("root port  {}", result.root_port.as_deref().unwrap_or("none"));
    outln!("root cost  {}", result.root_path_cost);
    outln!("topology changes {}", result.topology_changes);
    let rows: Vec<Vec<String>> = result
        .ports
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                if p.guard_tripped { format!("{} (bpdu guard)", p.role) } else { p.role.clone() },
                p.state.clone(),
                p.cost.to_string(),
                p.priority.to_string(),
                if p.edge { "yes" } else { "no" }.to_string(),
                p.protocol.clone(),
                p.bpdus_rx.to_string(),
                p.bpdus_tx.to_string(),
            ]
        })
        .collect();
    print_table(&["PORT", "ROLE", "STATE", "COST", "PRIO", "EDGE", "PROTOCOL", "BPDU_RX", "BPDU_TX"], &rows);
}
