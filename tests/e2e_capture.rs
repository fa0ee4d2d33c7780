//! End to end: `vswitchctl capture` on the real vswitchd binary, with two hosts on access ports
//! of VLAN 10 and tcpdump reading what it writes:
//! - frames are seen inside the switch (tagged with their VLAN, though they travel untagged on
//!   both wires), on the right port and in the right direction, and a dropped frame carries
//!   its drop reason as a packet comment (`--drops`);
//! - `--count N` stops after N frames, and `-w - | tcpdump -r -` works;
//! - a reader too slow for the traffic loses frames at the tap, and they are counted (the
//!   summary on stderr and the pcapng interface statistics agree).

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::*;
use vswitchd_control::pcapng::{self, Block, Direction};

const SECOND: Duration = Duration::from_secs(1);

/// Two hosts, each behind a TAP port in VLAN 10 (access), in namespaces of their own.
fn topology(tag: &str, threads: usize) -> String {
    format!(
        r#"
[bridge]
name = "cp{tag}"
threads = {threads}

[[netns]]
name = "cp{tag}a"

[[netns]]
name = "cp{tag}b"

[[port]]
name = "cp{tag}a"
type = "tap"
netns = "cp{tag}a"
address = "10.77.0.1/24"
vlan = 10

[[port]]
name = "cp{tag}b"
type = "tap"
netns = "cp{tag}b"
address = "10.77.0.2/24"
vlan = 10
"#
    )
}

/// The switch's namespace and the two hosts' (each host's interface is named as its port).
fn start(tag: &str, guard: &mut NamespaceGuard) -> (Daemon, String, String) {
    start_threads(tag, guard, 1)
}

fn start_threads(tag: &str, guard: &mut NamespaceGuard, threads: usize) -> (Daemon, String, String) {
    let (sw, a, b) = (format!("cp{tag}s"), format!("cp{tag}a"), format!("cp{tag}b"));
    guard.create(&sw);
    guard.adopt(&a);
    guard.adopt(&b);
    (Daemon::start(&sw, &topology(tag, threads)), a, b)
}

/// A broadcast frame from `src` with ethertype 0x88b5 (local experimental) and `n` inside.
fn probe(src: [u8; 6], n: u32) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(b"capture");
    f.extend_from_slice(&n.to_be_bytes());
    f.resize(60, 0);
    f
}

const HOST_A: [u8; 6] = [0x02, 0, 0, 0, 0xc0, 0x01];
/// A multicast source: the bridge drops it as `invalid_source`.
const BAD_SOURCE: [u8; 6] = [0x03, 0, 0, 0, 0xc0, 0x01];

/// Whether `f` is a probe, untagged or behind one 802.1Q tag; its tag's VLAN if tagged.
fn probe_vlan(f: &[u8]) -> Option<Option<u16>> {
    let (vlan, rest) = if f.get(12..14) == Some(&[0x81, 0x00]) {
        (Some(u16::from_be_bytes([f[14], f[15]]) & 0xfff), f.get(16..)?)
    } else {
        (None, f.get(12..)?)
    };
    (rest.len() >= 9 && rest[..2] == [0x88, 0xb5] && &rest[2..9] == b"capture").then_some(vlan)
}

fn capture(daemon: &Daemon, args: &[&str], stdout: Stdio) -> Child {
    Command::new(VSWITCHCTL)
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("capture")
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vswitchctl capture")
}

/// Ends a capture as Ctrl-C would and returns its stderr; it must exit 0.
fn stop(child: Child) -> String {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "vswitchctl capture: {} {stderr}", out.status);
    stderr
}

/// The (captured, lost) of a capture's summary line.
fn summary(stderr: &str) -> (u64, u64) {
    let words: Vec<&str> = stderr.split_whitespace().collect();
    let after = |w: &str| {
        let i = words.iter().position(|x| *x == w).unwrap_or_else(|| panic!("no {w:?} in {stderr:?}"));
        words[i + 1].parse::<u64>().unwrap()
    };
    (after("captured"), after("lost"))
}

fn read_pcapng(path: &Path) -> Option<Vec<Block>> {
    pcapng::read(&std::fs::read(path).ok()?)
}

fn tcpdump(args: &[&str], input: Option<&Path>) -> String {
    let mut command = Command::new("tcpdump");
    command.args(["-nn", "-e", "-r"]);
    match input {
        Some(path) => command.arg(path),
        None => command.arg("-"),
    };
    let out = command.args(args).output().expect("tcpdump (Debian package tcpdump)");
    assert!(out.status.success(), "tcpdump: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn frames_are_seen_inside_the_switch_with_their_tag_direction_and_drop_reason() {
    with_tag(|tag| {
        let mut guard = NamespaceGuard::default();
        let (daemon, a, b) = start(tag, &mut guard);
        let file = std::env::temp_dir().join(format!("vswitchd-capture-{tag}.pcapng"));
        let child = capture(&daemon, &[&a, &b, "--drops", "-w", file.to_str().unwrap()], Stdio::null());
        wait_for("the capture to start", 10 * SECOND, || {
            std::fs::metadata(&file).ok().filter(|m| m.len() > 0).map(drop)
        });

        let (at_a, at_b) = (RawPort::open(&a, &a), RawPort::open(&b, &b));
        let heard_at_b = thread::scope(|s| {
            // (at_b's socket is bound: what arrives before the collector reads is queued.)
            let heard = s.spawn(|| at_b.collect(SECOND, |f| probe_vlan(f).is_some()));
            (0..3).for_each(|n| at_a.send(&probe(HOST_A, n)));
            at_a.send(&probe(BAD_SOURCE, 9));
            heard.join().unwrap()
        });
        // On the wire, the access port takes the tag off again.
        assert_eq!(heard_at_b.iter().map(|f| probe_vlan(f)).collect::<Vec<_>>(), vec![Some(None); 3]);

        let probes = |blocks: &[Block]| {
            blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Packet { interface, data, direction, comment, .. } => probe_vlan(data)
                        .map(|vlan| (*interface, vlan, *direction, comment.clone(), data[6..12].to_vec())),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        wait_for("seven probes in the capture file", 10 * SECOND, || {
            read_pcapng(&file).filter(|blocks| probes(blocks).len() >= 7).map(drop)
        });
        let stderr = stop(child);
        let blocks = read_pcapng(&file).expect("a whole pcapng file");

        let interfaces: Vec<_> = blocks
            .iter()
            .filter_map(|b| match b {
                Block::Interface { name, description } => Some((name.clone(), description.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(interfaces.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), vec![a.as_str(), b.as_str()]);
        for (_, description) in &interfaces {
            assert!(description.contains("after ingress VLAN translation"), "{description}");
            assert!(description.contains("before egress tagging"), "{description}");
        }
        let seen = probes(&blocks);
        let good = |interface, direction| {
            seen.iter()
                .filter(|p| p.0 == interface && p.2 == Some(direction) && p.4 == HOST_A)
                .map(|p| (p.1, p.3.clone()))
                .collect::<Vec<_>>()
        };
        // Received untagged on an access port of VLAN 10: inside, the frame is in VLAN 10.
        assert_eq!(good(0, Direction::Inbound), vec![(Some(10), None); 3], "{seen:?}");
        assert_eq!(good(1, Direction::Outbound), vec![(Some(10), None); 3], "{seen:?}");
        let dropped: Vec<_> = seen.iter().filter(|p| p.4 == BAD_SOURCE).collect();
        assert_eq!(dropped.len(), 1, "{seen:?}");
        assert_eq!(
            (dropped[0].0, dropped[0].1, dropped[0].2, dropped[0].3.as_deref()),
            (0, None, Some(Direction::Inbound), Some("drop: invalid_source"))
        );
        let (captured, lost) = summary(&stderr);
        let packets = blocks.iter().filter(|b| matches!(b, Block::Packet { .. })).count() as u64;
        assert_eq!((captured, lost), (packets, 0), "{stderr}");

        // tcpdump reads the same frames and tags.
        let text = tcpdump(&[], Some(&file));
        let _ = std::fs::remove_file(&file);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("0x88b5")).collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert_eq!(lines.iter().filter(|l| l.contains("vlan 10,")).count(), 6, "{text}");
        assert_eq!(lines.iter().filter(|l| l.contains("03:00:00:00:c0:01 >")).count(), 1, "{text}");
    });
}

#[test]
fn count_stops_the_capture_and_standard_output_pipes_into_tcpdump() {
    with_tag(|tag| {
        let mut guard = NamespaceGuard::default();
        let (daemon, a, _b) = start(tag, &mut guard);
        let (code, _, stderr) = daemon.ctl_status(&["capture", "nosuchport", "--count", "1"]);
        assert_eq!((code, stderr.trim()), (2, "vswitchctl: capture: no port nosuchport"));
        let (code, _, stderr) = daemon.ctl_status(&["capture", &a, &a]);
        assert_eq!((code, stderr.trim()), (2, format!("vswitchctl: capture: port {a} named twice").as_str()));
        let pipeline = format!(
            "set -o pipefail; {} --socket {} capture {a} --count 3 -w - | tcpdump -r - -nn -e",
            VSWITCHCTL,
            daemon.socket.display()
        );
        let at_a = RawPort::open(&a, &a);
        let (ok, stdout, stderr) = pipeline_with_traffic(&pipeline, &at_a);
        assert!(ok, "{stderr}");
        // (tcpdump prints one line a frame, and its bytes on indented lines after it.)
        let frames: Vec<&str> = stdout.lines().filter(|l| !l.starts_with(char::is_whitespace)).collect();
        assert_eq!(frames.len(), 3, "{stdout}");
        // Whatever they are, frames received on an access port of VLAN 10 are in VLAN 10 inside.
        assert!(frames.iter().all(|l| l.contains("vlan 10,")), "{stdout}");
        assert_eq!(summary(&stderr), (3, 0), "{stderr}");

        // SIGTERM ends a capture while frames keep coming, with its summary.
        let file = std::env::temp_dir().join(format!("vswitchd-capture-{tag}.pcapng"));
        let child = capture(&daemon, &[&a, "-w", file.to_str().unwrap()], Stdio::null());
        for n in 0..60 {
            at_a.send(&probe(HOST_A, n));
            thread::sleep(SECOND / 50);
        }
        let pid = Pid::from_raw(child.id() as i32);
        kill(pid, Signal::SIGTERM).unwrap();
        let killed = Instant::now();
        let (sending, took) = thread::scope(|s| {
            let waiter = s.spawn(|| child.wait_with_output().unwrap());
            let mut n = 100;
            while !waiter.is_finished() && killed.elapsed() < 10 * SECOND {
                at_a.send(&probe(HOST_A, n));
                n += 1;
                thread::sleep(SECOND / 50);
            }
            (waiter.join().unwrap(), killed.elapsed())
        });
        assert!(took < 5 * SECOND, "a busy capture took {took:?} to end after SIGTERM");
        let stderr = String::from_utf8_lossy(&sending.stderr).into_owned();
        assert!(sending.status.success(), "{stderr}");
        let blocks = read_pcapng(&file).expect("a whole pcapng file");
        let _ = std::fs::remove_file(&file);
        let packets = blocks.iter().filter(|b| matches!(b, Block::Packet { .. })).count() as u64;
        assert!(packets >= 50, "{packets} frames");
        assert_eq!(summary(&stderr), (packets, 0), "{stderr}");

        // A reader that stops after 2 frames ends the capture: quietly, status 141 (SIGPIPE's).
        let pipeline = format!(
            "{} --socket {} capture {a} -w - | tcpdump -c 2 -r - -nn -e; echo status ${{PIPESTATUS[0]}} >&2",
            VSWITCHCTL,
            daemon.socket.display()
        );
        let (_, stdout, stderr) = pipeline_with_traffic(&pipeline, &at_a);
        let frames = stdout.lines().filter(|l| !l.starts_with(char::is_whitespace)).count();
        assert_eq!(frames, 2, "{stdout}");
        assert!(stderr.contains("status 141") && !stderr.contains("vswitchctl:"), "{stderr}");
    });
}

/// Runs `pipeline` under bash while host a sends a probe every 50 ms; returns whether it
/// succeeded, its stdout and its stderr.
fn pipeline_with_traffic(pipeline: &str, at_a: &RawPort) -> (bool, String, String) {
    let mut child = Command::new("bash")
        .args(["-c", pipeline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + 15 * SECOND;
    let mut n = 0;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the pipeline did not end: {pipeline}");
        at_a.send(&probe(HOST_A, n));
        n += 1;
        thread::sleep(SECOND / 20);
    }
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_slow_reader_loses_frames_and_they_are_counted() {
    with_tag(|tag| {
        let mut guard = NamespaceGuard::default();
        let (daemon, a, b) = start(tag, &mut guard);
        let rx_frames =
            |port: &str| daemon.ctl_json(&["port", "show", port]).unwrap()["ports"][0]["rx_frames"].as_u64().unwrap();
        let mut child = capture(&daemon, &[&a, &b, "-w", "-"], Stdio::piped());
        let mut stdout = child.stdout.take().unwrap();
        let mut head = [0u8; 4];
        stdout.read_exact(&mut head).unwrap(); // the section header: the capture runs
        let before = rx_frames(&a);
        // The reader takes nothing while a burst goes through: pipe and socket fill up, then
        // the capture's pool, and the rest is lost (counted), while forwarding goes on.
        let at_a = RawPort::open(&a, &a);
        for n in 0..20_000 {
            let _ = at_a.try_send(&probe(HOST_A, n));
        }
        thread::sleep(SECOND / 2);
        let received = rx_frames(&a) - before;
        let reader = thread::spawn(move || {
            let mut rest = head.to_vec();
            stdout.read_to_end(&mut rest).unwrap();
            rest
        });
        thread::sleep(SECOND / 2);
        let stderr = stop(child);
        let bytes = reader.join().unwrap();
        let blocks = pcapng::read(&bytes).expect("a whole pcapng stream");
        let (captured, lost) = summary(&stderr);
        let packets = blocks.iter().filter(|b| matches!(b, Block::Packet { .. })).count() as u64;
        let isb_lost: u64 = blocks
            .iter()
            .filter_map(|b| match b {
                Block::Statistics { dropped, .. } => *dropped,
                _ => None,
            })
            .sum();
        eprintln!("slow reader: port a received {received} frames; captured {captured}, lost {lost}");
        assert_eq!(packets, captured, "{stderr}");
        assert_eq!(isb_lost, lost, "{stderr}");
        assert!(lost > 0, "nothing lost: {stderr}");
        assert!(received > 1000, "the burst did not get through: {received}");
        // Each frame received on port a was either captured or counted lost (and so was each
        // copy sent out of port b).
        assert!(captured + lost >= received, "captured {captured} + lost {lost} < received {received}");
        // (The bytes came through a pipe: tcpdump takes them too.)
        let text = tcpdump_stdin(&bytes);
        assert!(text.lines().filter(|l| l.contains("0x88b5")).count() as u64 <= captured);
    });
}

/// A UDP broadcast from host a (IPv4 header checksum left out: the switch does not look) from
/// port `sport`: flows the kernel spreads over the TAP's queues, hence over the workers.
fn udp_probe(sport: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&HOST_A);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 35, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 255]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&[0x27, 0x0f, 0, 15, 0, 0]);
    f.extend_from_slice(b"capture");
    f.resize(60, 0);
    f
}

/// The source port of a `udp_probe` seen inside the switch (behind a VLAN 10 tag).
fn udp_probe_port(f: &[u8]) -> Option<u16> {
    let ip = f.get(18..)?;
    (f[12..16] == [0x81, 0, 0, 10] && f[16..18] == [0x08, 0x00] && ip.get(22..24)? == [0x27, 0x0f])
        .then(|| u16::from_be_bytes([ip[20], ip[21]]))
}

#[test]
fn every_worker_feeds_the_capture() {
    with_tag(|tag| {
        let mut guard = NamespaceGuard::default();
        let (daemon, a, b) = start_threads(tag, &mut guard, 2);
        let file = std::env::temp_dir().join(format!("vswitchd-capture-{tag}.pcapng"));
        let child = capture(&daemon, &[&a, &b, "-w", file.to_str().unwrap()], Stdio::null());
        wait_for("the capture to start", 10 * SECOND, || {
            std::fs::metadata(&file).ok().filter(|m| m.len() > 0).map(drop)
        });
        let at_a = RawPort::open(&a, &a);
        for sport in 40_000..40_064 {
            at_a.send(&udp_probe(sport));
        }
        let ports = |blocks: &[Block], interface: u32| {
            let mut ports: Vec<u16> = blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Packet { interface: i, data, .. } if *i == interface => udp_probe_port(data),
                    _ => None,
                })
                .collect();
            ports.sort_unstable();
            ports
        };
        let blocks = wait_for("the 64 flows in and out in the capture", 10 * SECOND, || {
            read_pcapng(&file).filter(|blocks| ports(blocks, 0).len() >= 64 && ports(blocks, 1).len() >= 64)
        });
        let _ = stop(child);
        let _ = std::fs::remove_file(&file);
        let all: Vec<u16> = (40_000..40_064).collect();
        assert_eq!((ports(&blocks, 0), ports(&blocks, 1)), (all.clone(), all));
        let show = daemon.ctl_json(&["show"]).unwrap();
        let workers = show["bridge"]["worker_rx_frames"].as_array().unwrap().clone();
        assert!(workers.len() == 2 && workers.iter().all(|n| n.as_u64() > Some(0)), "{show}");
    });
}

fn tcpdump_stdin(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("tcpdump")
        .args(["-nn", "-e", "-r", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (Debian package tcpdump)");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "tcpdump: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
