//! The command lines: exit codes and messages for bad input, `--check`. A bad topology file is
//! refused with status 2, naming the file, line and key, before anything is created. Output
//! into a pipe whose reader has gone ends quietly, with status 141, as coreutils' tools do.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};

use support::*;

fn write_config(text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vswitchd-cli-{}", unique_tag()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("topology.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(program: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(program).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(ns: &str, port_extra: &str) -> String {
    format!(
        "[bridge]\nname = \"cli\"\n\n[[netns]]\nname = \"{ns}\"\n\n[[port]]\nname = \"vcli0\"\ntype = \"tap\"\nnetns = \"{ns}\"\n{port_extra}\n"
    )
}

#[test]
fn a_bad_topology_exits_2_naming_file_line_and_key_and_creates_nothing() {
    let ns = format!("vc{}", unique_tag());
    let cases = [
        ("colour = \"red\"", "colour"),
        ("address = \"10.0.0.1\"", "port[0].address"),
        ("mtu = 12", "port[0].mtu"),
        ("mac = \"ff:ff:ff:ff:ff:ff\"", "port[0].mac"),
    ];
    for (extra, key) in cases {
        let path = write_config(&config(&ns, extra));
        let (code, _, stderr) = run(VSWITCHD, &["--config", path.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{extra}: {stderr}");
        let located = format!("{}:11", path.display());
        assert!(stderr.contains(&located), "{extra}: no file:line in {stderr}");
        assert!(stderr.contains(key), "{extra}: key {key} not named in {stderr}");
        assert!(!netns_exists(&ns), "a namespace was created for a bad file");
    }
    let path = write_config(&config(&ns, "").replace("netns = \"vc", "netns = \"missing-vc"));
    let (code, _, stderr) = run(VSWITCHD, &["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains(":10: key `port[0].netns`: namespace \"missing-"), "{stderr}");
    let dup = config(&ns, "") + "[[port]]\nname = \"vcli0\"\ntype = \"tap\"\n";
    let (code, _, stderr) = run(VSWITCHD, &["--config", write_config(&dup).to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains(":13: key `port[1].name`: port name \"vcli0\" is used twice"), "{stderr}");
    assert!(!netns_exists(&ns));
}

#[test]
fn check_prints_the_plan_and_changes_nothing() {
    let ns = format!("vc{}", unique_tag());
    let path = write_config(&config(&ns, "address = \"10.9.0.1/24\""));
    let (code, stdout, stderr) = run(VSWITCHD, &["--check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&format!("create namespace {ns}")), "{stdout}");
    assert!(stdout.contains("create TAP device vcli0"), "{stdout}");
    assert!(stdout.contains(&format!("add address 10.9.0.1/24 to vcli0 in namespace {ns}")), "{stdout}");
    assert!(stdout.contains("/run/vswitchd/cli.ctl"), "{stdout}");
    assert!(!netns_exists(&ns));
}

#[test]
fn thread_counts_show_in_the_plan_and_bad_ones_exit_2() {
    let ns = format!("vc{}", unique_tag());
    let path = write_config(&config(&ns, ""));
    let (code, stdout, stderr) = run(VSWITCHD, &["--check", "--threads", "2", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("worker threads: 2"), "{stdout}");
    assert!(stdout.contains("create TAP device vcli0 with 2 queues"), "{stdout}");
    for bad in ["0", "65", "many"] {
        let (code, _, stderr) = run(VSWITCHD, &["--check", "--threads", bad, "--config", path.to_str().unwrap()]);
        assert_eq!(code, Some(2), "--threads {bad}: {stderr}");
    }
    // A bond's members stay single-queue: the bond is served by the first worker.
    let bonded = format!("{}/../fixtures/seed-bond-active-backup.toml", env!("CARGO_MANIFEST_DIR"));
    let (code, stdout, stderr) = run(VSWITCHD, &["--check", "--threads", "3", "--config", &bonded]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("worker threads: 3"), "{stdout}");
    assert!(!netns_exists(&ns));
}

#[test]
fn bad_command_lines_exit_2() {
    assert_eq!(run(VSWITCHD, &[]).0, Some(2));
    assert_eq!(run(VSWITCHD, &["--config", "x.toml", "--frobnicate"]).0, Some(2));
    assert_eq!(run(VSWITCHD, &["--config", "x.toml", "--log-level", "loud"]).0, Some(2));
    let (code, _, stderr) = run(VSWITCHD, &["--config", "/nonexistent/topology.toml"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/topology.toml: cannot read"), "{stderr}");
    assert_eq!(run(VSWITCHCTL, &["fdb", "frob"]).0, Some(2));
    assert_eq!(run(VSWITCHCTL, &[]).0, Some(2));
}

#[test]
fn vswitchctl_without_a_daemon_says_so() {
    let (code, _, stderr) = run(VSWITCHCTL, &["--socket", "/nonexistent/x.ctl", "show"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot connect to /nonexistent/x.ctl"), "{stderr}");
    let (code, stdout, stderr) = run(VSWITCHCTL, &["--socket", "/nonexistent/x.ctl", "show", "--dot"]);
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty() && stderr.contains("cannot connect to /nonexistent/x.ctl"), "{stdout}{stderr}");
    // A graph or JSON, not both: refused before connecting.
    let (code, _, stderr) = run(VSWITCHCTL, &["--socket", "/nonexistent/x.ctl", "--json", "show", "--dot"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--dot") && stderr.contains("--json"), "{stderr}");
}

#[test]
fn the_shipped_fixtures_are_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, _, stderr) = run(VSWITCHD, &["--check", "--config", path.to_str().unwrap()]);
            assert_eq!(code, Some(0), "{}: {stderr}", path.display());
        }
    }
}

/// The status a shell reports for a process SIGPIPE killed, what coreutils' tools end with when
/// their reader goes away: vswitchd and vswitchctl end with it too.
const SIGPIPE_EXIT_STATUS: i32 = 141;

/// Runs `program args` with stdout a pipe whose read end is closed before the program starts,
/// as when `head` has already gone; returns the exit code and stderr.
fn run_into_a_closed_pipe(program: &str, args: &[&str]) -> (Option<i32>, String) {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    drop(read_end);
    let out = Command::new(program).args(args).stdin(Stdio::null()).stdout(write_end).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Asserts that a run into a closed pipe ended as a Unix tool does: status 141, no panic.
fn assert_ended_quietly(what: &str, (code, stderr): (Option<i32>, String)) {
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{what}: {stderr}");
    assert_eq!(code, Some(SIGPIPE_EXIT_STATUS), "{what}: {stderr}");
}

#[test]
fn check_into_a_closed_pipe_ends_quietly() {
    let quickstart = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/quickstart.toml");
    let run = run_into_a_closed_pipe(VSWITCHD, &["--check", "--config", quickstart]);
    assert_ended_quietly("vswitchd --check", run);
}

#[test]
fn vswitchctl_into_a_closed_pipe_ends_quietly() {
    // A stand-in for vswitchd's control socket: answers each request with an empty FDB.
    let dir = std::env::temp_dir().join(format!("vswitchd-cli-{}", unique_tag()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("fake.ctl");
    let listener = UnixListener::bind(&socket).unwrap();
    let commands: [&[&str]; 2] = [&["fdb", "show"], &["--json", "fdb", "show"]];
    let server = std::thread::spawn(move || {
        let empty = vswitchd_control::ctl::FdbResult { entries: Vec::new() };
        let reply = vswitchd_control::ctl::Response {
            ok: true,
            result: Some(serde_json::to_value(empty).unwrap()),
            error: None,
            refused: false,
        };
        for _ in 0..commands.len() {
            let (stream, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(&stream).read_line(&mut request).unwrap();
            writeln!(&stream, "{}", serde_json::to_string(&reply).unwrap()).unwrap();
        }
    });
    for command in commands {
        let args = [&["--socket", socket.to_str().unwrap()], command].concat();
        assert_ended_quietly(&format!("vswitchctl {}", command.join(" ")), run_into_a_closed_pipe(VSWITCHCTL, &args));
    }
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_into_a_full_device_says_so_and_exits_1() {
    let quickstart = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/quickstart.toml");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = Command::new(VSWITCHD).args(["--check", "--config", quickstart]).stdout(full).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("vswitchd: cannot write to stdout: No space left on device"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}

#[test]
fn each_program_opens_its_help_with_its_own_description() {
    let cni = env!("CARGO_BIN_EXE_vswitchd-cni");
    let mut first_lines = Vec::new();
    for (program, name) in [(VSWITCHD, "vswitchd"), (VSWITCHCTL, "vswitchctl"), (cni, "vswitchd-cni")] {
        // stdin closed: the CNI plugin must answer --help without waiting for a configuration.
        let out = Command::new(program).arg("--help").stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name} --help");
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        let first = help.lines().next().unwrap_or_default().to_string();
        assert!(first.starts_with(&format!("{name}: ")), "{name} --help opens with {first:?}");
        assert!(!first.contains("control plane: topology file"), "{name}: the crate's description: {first:?}");
        first_lines.push(first);
    }
    first_lines.sort();
    first_lines.dedup();
    assert_eq!(first_lines.len(), 3, "{first_lines:?}");
}

#[test]
fn port_settings_that_are_not_key_value_are_usage_errors() {
    let socket = "/nonexistent/vswitchd-cli.ctl";
    for args in [
        &["port", "set", "vm2", "trunk", "10"][..],
        &["port", "add", "vm2", "netdev", "device"],
        &["port", "set", "vm2", "=5"],
    ] {
        let (code, _, stderr) = run(VSWITCHCTL, &[&["--socket", socket][..], args].concat());
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("is not KEY=VALUE"), "{args:?}: {stderr}");
    }
    // Well-formed ones reach the connection (and fail there, with no daemon).
    let (code, _, stderr) = run(VSWITCHCTL, &["--socket", socket, "port", "set", "vm2", "trunk=[10,20]", "mtu="]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}
