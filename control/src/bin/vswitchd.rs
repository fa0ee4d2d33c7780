//! `vswitchd`: reads a topology file, creates the plumbing (recording it in the bridge's state
//! file first), switches frames in userspace until SIGINT/SIGTERM, then removes what it created.
//! The control socket appears, and systemd hears `READY=1`, once every port forwards.
//! `--check` prints the plan to stdout and ends quietly if its reader goes away
//! (`vswitchd --check --config F | head -2`): see [`vswitchd_control::stdout`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use vswitchd_control::topology::{Threads, Topology};
use vswitchd_control::{ctl, daemon, metrics_http, plumbing, state};

use vswitchd_control::outln;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for tracing::Level {
    fn from(l: LogLevel) -> tracing::Level {
        match l {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// vswitchd: a userspace Ethernet switch over TAP devices, veth pairs and packet sockets.
///
/// Reads a topology file, creates the namespaces, TAP devices and veth pairs it names, switches
/// frames between them until stopped, then removes what it created. Control it with vswitchctl;
/// documentation in README.md and docs/.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The topology file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The control socket (default: /run/vswitchd/<bridge name>.ctl).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// How much to log to stderr.
    #[arg(long, value_enum, default_value = "info")]
    log_level: LogLevel,
    /// Validate the file and print the plan; change nothing.
    #[arg(long)]
    check: bool,
    /// Keep polling for this many microseconds after every frame before sleeping, whatever the
    /// rate (0: never busy-poll). Without it, a worker polls for 50 ms after a frame, yielding
    /// the core, only while traffic is sparse (at most 16 frames in a millisecond), and sleeps
    /// when idle, when traffic is dense, or when the core is contended.
    #[arg(long, value_name = "MICROSECONDS")]
    busy_poll_us: Option<u64>,
    /// Take the bridge over from the vswitchd running it (on the same control socket): its
    /// TAP devices, sockets and FDB pass to this process, which forwards on them before the
    /// old one stops; hosts keep their interfaces. The running topology (with its live
    /// changes) is what runs; FILE names the bridge and is what `reload` reads from then on.
    #[arg(long, conflicts_with = "check")]
    takeover: bool,
    /// Worker threads forwarding frames (overrides the topology's `bridge.threads`; default:
    /// one per two cores, at most four).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: Option<u16>,
    /// Serve the metrics (Prometheus text format) over HTTP at http://ADDR/metrics, bound to
    /// ADDR only (off by default; e.g. 127.0.0.1:9477).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::from(args.log_level))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut topology = match Topology::load(&args.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vswitchd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(threads) = args.threads {
        topology.bridge.threads = Threads::Count(usize::from(threads));
    }
    let socket = args.socket.unwrap_or_else(|| ctl::default_socket(&topology.bridge.name));
    let metrics_addr = match args.metrics.as_deref().map(metrics_http::parse_addr).transpose() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("vswitchd: {e}");
            return ExitCode::from(2);
        }
    };

    if args.check {
        outln!(
            "{}: valid; bridge {} with {} namespace(s) and {} port(s)",
            topology.path.display(),
            topology.bridge.name,
            topology.netns.len(),
            topology.ports.len()
        );
        outln!("worker threads: {}", topology.worker_threads());
        outln!("plan:");
        for (i, step) in plumbing::plan(&topology).iter().enumerate() {
            outln!("  {:>2}. {step}", i + 1);
        }
        let state_dir = state::path_for(&socket, &topology.bridge.name).parent().map(std::path::Path::to_path_buf);
        let services = vswitchd_control::services::plan(&topology, &state_dir.unwrap_or_default());
        if !services.is_empty() {
            outln!("host services:");
            for service in &services {
                outln!("  - {service}");
            }
        }
        outln!("control socket: {}", socket.display());
        if let Some(addr) = metrics_addr {
            outln!("metrics: http://{addr}/metrics");
        }
        outln!("state file: {}", state::path_for(&socket, &topology.bridge.name).display());
        return ExitCode::SUCCESS;
    }

    let start = if args.takeover { daemon::Start::Takeover } else { daemon::Start::Fresh };
    // A fresh start binds the metrics address before anything is created, so a wrong one
    // changes nothing; a takeover binds it once the old process lets go of it.
    let metrics = match (metrics_addr, start) {
        (None, _) => None,
        (Some(addr), daemon::Start::Takeover) => Some(metrics_http::Listen::Later(addr)),
        (Some(addr), daemon::Start::Fresh) => match metrics_http::bind(addr) {
            Ok(listener) => Some(metrics_http::Listen::Bound(listener)),
            Err(e) => {
                eprintln!("vswitchd: --metrics {addr}: cannot listen: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match daemon::run_serving(
        &topology,
        &socket,
        vswitchd_dataplane::busy_poll::BusyPoll::from_micros(args.busy_poll_us),
        start,
        metrics,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut text = e.to_string();
            if text.contains("Operation not permitted") || text.contains("Permission denied") {
                text.push_str(" (vswitchd needs root or CAP_NET_ADMIN and CAP_SYS_ADMIN)");
            }
            eprintln!("vswitchd: {text}");
            ExitCode::from(1)
        }
    }
}
