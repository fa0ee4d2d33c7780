//! The state file: what a running vswitchd has created, written down before each creation, so
//! an instance started after a kill can tell a live owner from a dead one and remove what the
//! dead one left behind.
//!
//! One file per bridge, `BRIDGE.state`, in the directory of the control socket (by default
//! `/run/vswitchd/BRIDGE.state`), JSON: the owner's pid and start time, and the namespaces,
//! TAP devices and veth pairs it created, in the order it created them. Addresses and routes
//! are not listed: they go with their device or namespace. Every write replaces the file whole
//! (a temporary file renamed over it), so a reader never sees half a list.
//!
//! [`claim`] decides, under a lock on the directory, whether the bridge is free: a state file
//! whose owner still runs refuses the start ([`StateError::AlreadyRunning`]); one whose owner is
//! gone hands its list over for removal. The decision itself is plain data ([`owner`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// One thing vswitchd created, as the state file lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Created {
    /// A named namespace that did not exist before (one found in place is never listed).
    Namespace {
        /// Its name.
        name: String,
    },
    /// A TAP device.
    Tap {
        /// Its name.
        name: String,
        /// The namespace its kernel side goes to (`None`: vswitchd's own).
        netns: Option<String>,
    },
    /// A veth pair; deleting the end in vswitchd's namespace deletes both.
    Veth {
        /// The end vswitchd attaches to, in its own namespace.
        switch_end: String,
        /// The end that goes to the host.
        host_end: String,
    },
    /// A kernel link in vswitchd's namespace made for a port (an EVPN port's bridge, VXLAN
    /// device and veth pair, listed by its end in the bridge).
    Link {
        /// Its name.
        name: String,
        /// Its kind (`bridge`, `vxlan`, `veth`): a link of that name of another kind is not ours.
        link_type: String,
        /// The port it was made for.
        port: String,
    },
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Created::Namespace { name } => write!(f, "namespace {name}"),
            Created::Tap { name, netns: Some(ns) } => write!(f, "TAP device {name} (kernel side in namespace {ns})"),
            Created::Tap { name, netns: None } => write!(f, "TAP device {name}"),
            Created::Veth { switch_end, host_end } => write!(f, "veth pair {host_end} / {switch_end}"),
            Created::Link { name, link_type, port } => write!(f, "{link_type} link {name} (for port {port})"),
        }
    }
}

/// The contents of a state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The bridge.
    pub bridge: String,
    /// The process that owns it.
    pub pid: u32,
    /// When that process started, in clock ticks after boot (`/proc/PID/stat`, field 22): a
    /// pid reused by another process does not pass for the owner.
    pub started: Option<u64>,
    /// What it created, oldest first.
    pub created: Vec<Created>,
}

/// What `/proc` says about a running process, as far as ownership goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its command name (`/proc/PID/comm`).
    pub command: String,
    /// When it started, in clock ticks after boot.
    pub started: Option<u64>,
}

/// Who holds a bridge, according to its state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The process that wrote the record runs: the bridge is taken.
    Running(u32),
    /// It is gone (or the pid now belongs to some other process): what it lists is left over.
    Gone,
}

/// Decides who holds the bridge `record` describes. `me` is the caller (the same program: its
/// pid and command name); `process` is what `/proc` says about `record.pid` now (`None`: no such
/// process). The owner runs only if that pid is another process running the same program and,
/// when the record gives one, with the same start time.
pub fn owner(record: &Record, me: (u32, &str), process: Option<&ProcessInfo>) -> Owner {
    let Some(process) = process else { return Owner::Gone };
    let (my_pid, my_command) = me;
    let same_start = match (record.started, process.started) {
        (Some(recorded), Some(now)) => recorded == now,
        (Some(_), None) => false,
        (None, _) => true,
    };
    if record.pid != my_pid && process.command == my_command && same_start {
        Owner::Running(record.pid)
    } else {
        Owner::Gone
    }
}

/// The start time (field 22) in the text of a `/proc/PID/stat` file. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted from its closing parenthesis.
pub fn start_time_from_stat(stat: &str) -> Option<u64> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after the command name, so field 22 is the 20th.
    after_command.split_whitespace().nth(19)?.parse().ok()
}

/// What `/proc` says about process `pid`, if it exists.
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    let command = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let started = fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| start_time_from_stat(&s));
    Some(ProcessInfo { command: command.trim_end_matches('\n').to_string(), started })
}

/// The state file of `bridge` when its control socket is `socket`: beside the socket.
pub fn path_for(socket: &Path, bridge: &str) -> PathBuf {
    let dir = socket.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join(format!("{bridge}.state"))
}

/// Why the bridge cannot be claimed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another vswitchd runs this bridge.
    #[error("bridge {bridge} is already run by vswitchd (pid {pid}); its state file is {}", path.display())]
    AlreadyRunning {
        /// The bridge.
        bridge: String,
        /// The running process.
        pid: u32,
        /// Its state file.
        path: PathBuf,
    },
    /// The state file cannot be read, trusted or written.
    #[error("state file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl StateError {
    fn file(path: &Path, message: impl fmt::Display) -> StateError {
        StateError::File { path: path.to_path_buf(), message: message.to_string() }
    }
}

/// A claim on a bridge that no running process holds: the directory stays locked (so a second
/// instance starting at the same moment waits, then finds this one's pid) until
/// [`Claim::take`] writes the new owner's record.
#[derive(Debug)]
pub struct Claim {
    _lock: Flock<File>,
    path: PathBuf,
    bridge: String,
    left_over: Option<Record>,
}

/// Claims `bridge`, whose state file is `path` (see [`path_for`]): creates the directory (0755)
/// if missing, locks it, and reads the state file. Refuses if the file's owner runs, and leaves
/// alone (refusing too) a file that is not a regular file owned by this user and writable by
/// no one else, or that does not parse: what it lists would be deleted.
pub fn claim(path: &Path, bridge: &str) -> Result<Claim, StateError> {
    let my_command = fs::read_to_string("/proc/self/comm").unwrap_or_default();
    claim_as(path, bridge, my_command.trim_end_matches('\n'))
}

/// [`claim`], for a process whose command name is `command`.
fn claim_as(path: &Path, bridge: &str, command: &str) -> Result<Claim, StateError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| StateError::file(path, format!("cannot create the directory: {e}")))?;
    let dir_file = File::open(dir).map_err(|e| StateError::file(path, format!("cannot open the directory: {e}")))?;
    let lock = Flock::lock(dir_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| StateError::file(path, format!("cannot lock the directory: {e}")))?;
    let left_over = read(path)?;
    if let Some(record) = &left_over {
        if let Owner::Running(pid) = owner(record, (std::process::id(), command), process_info(record.pid).as_ref()) {
            return Err(StateError::AlreadyRunning { bridge: bridge.to_string(), pid, path: path.to_path_buf() });
        }
    }
    Ok(Claim { _lock: lock, path: path.to_path_buf(), bridge: bridge.to_string(), left_over })
}

/// Makes this process the owner of `bridge`'s state file `path` in place of a running
/// vswitchd that is handing its bridge over (`vswitchd --takeover`), listing `created`, what
/// that process created and this one now owns. Under the directory's lock, like [`claim`].
pub fn take_over(path: &Path, bridge: &str, created: Vec<Created>) -> Result<StateFile, StateError> {
    write_owner(path, bridge, std::process::id(), created)
}

/// Gives `bridge`'s state file `path` back to `pid`, the vswitchd a takeover failed to take
/// it from (it still runs and owns `created`).
pub fn give_back(path: &Path, bridge: &str, pid: u32, created: Vec<Created>) -> Result<(), StateError> {
    write_owner(path, bridge, pid, created).map(drop)
}

/// Writes `bridge`'s state file `path` naming `pid` as the owner of `created`.
fn write_owner(path: &Path, bridge: &str, pid: u32, created: Vec<Created>) -> Result<StateFile, StateError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir_file = File::open(dir).map_err(|e| StateError::file(path, format!("cannot open the directory: {e}")))?;
    let _lock = Flock::lock(dir_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| StateError::file(path, format!("cannot lock the directory: {e}")))?;
    let record =
        Record { bridge: bridge.to_string(), pid, started: process_info(pid).and_then(|p| p.started), created };
    let listed_json = record
        .created
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()
        .map_err(|e| StateError::file(path, format!("cannot write: {e}")))?;
    write(path, &record).map_err(|e| StateError::file(path, format!("cannot write: {e}")))?;
    Ok(StateFile { path: path.to_path_buf(), record, listed_json })
}

/// Reads the state file at `path`, if there is one, after checking it can be trusted.
fn read(path: &Path) -> Result<Option<Record>, StateError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::file(path, format!("cannot inspect: {e}"))),
    };
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_file() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(StateError::file(
            path,
            format!(
                "not a regular file owned by uid {euid} and writable by it alone: leaving it alone \
                 (what it lists would be deleted)"
            ),
        ));
    }
    let text = fs::read_to_string(path).map_err(|e| StateError::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StateError::file(path, format!("cannot parse ({e}): remove it if no vswitchd runs this bridge")))
}

/// Replaces the file at `path` with `record`.
fn write(path: &Path, record: &Record) -> io::Result<()> {
    let mut text = serde_json::to_vec(record).map_err(io::Error::other)?;
    text.push(b'\n');
    replace(path, &text)
}

/// Replaces the file at `path` with `text`: written to a temporary file beside it (mode 0600),
/// then renamed over it.
fn replace(path: &Path, text: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let create = || OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary);
    let mut file = match create() {
        // Left by a process killed while writing: only the bridge's owner writes here.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(&temporary)?;
            create()?
        }
        other => other?,
    };
    let written = file.write_all(text);
    drop(file);
    written.and_then(|()| fs::rename(&temporary, path)).inspect_err(|_| {
        let _ = fs::remove_file(&temporary);
    })
}

impl Claim {
    /// The record of the dead owner, whose list is left over, if there was a state file.
    pub fn left_over(&self) -> Option<&Record> {
        self.left_over.as_ref()
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the dead owner's record, now listing only `remaining` (what could not be removed),
    /// and gives up the claim: the next start tries again.
    pub fn keep_left_over(self, remaining: Vec<Created>) -> Result<(), StateError> {
        let Some(mut record) = self.left_over else { return Ok(()) };
        record.created = remaining;
        write(&self.path, &record).map_err(|e| StateError::file(&self.path, format!("cannot write: {e}")))
    }

    /// Makes this process the owner: writes its record, listing nothing yet, and unlocks the
    /// directory.
    pub fn take(self) -> Result<StateFile, StateError> {
        let record = Record {
            bridge: self.bridge,
            pid: std::process::id(),
            started: process_info(std::process::id()).and_then(|p| p.started),
            created: Vec::new(),
        };
        write(&self.path, &record).map_err(|e| StateError::file(&self.path, format!("cannot write: {e}")))?;
        Ok(StateFile { path: self.path, record, listed_json: Vec::new() })
    }
}

/// The state file of the bridge this process owns.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    record: Record,
    /// Each entry of `record.created` as JSON: a write serializes only what is new (a thousand
    /// ports mean a thousand writes of a growing list).
    listed_json: Vec<String>,
}

/// The fields of a [`Record`] before its list.
#[derive(Serialize)]
struct RecordHead<'a> {
    bridge: &'a str,
    pid: u32,
    started: Option<u64>,
}

impl StateFile {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file lists now.
    pub fn created(&self) -> &[Created] {
        &self.record.created
    }

    /// The record as JSON, as `serde_json` writes a [`Record`], from the entries serialized
    /// already.
    fn text(&self) -> io::Result<Vec<u8>> {
        let head = RecordHead { bridge: &self.record.bridge, pid: self.record.pid, started: self.record.started };
        let mut text = serde_json::to_vec(&head).map_err(io::Error::other)?;
        text.pop(); // the closing brace
        text.extend_from_slice(b",\"created\":[");
        for (i, entry) in self.listed_json.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            text.extend_from_slice(entry.as_bytes());
        }
        text.extend_from_slice(b"]}\n");
        Ok(text)
    }

    fn save(&self) -> io::Result<()> {
        self.text()
            .and_then(|text| replace(&self.path, &text))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot write state file {}: {e}", self.path.display())))
    }

    /// Lists `what` before it is created.
    pub fn will_create(&mut self, what: Created) -> io::Result<()> {
        self.listed_json.push(serde_json::to_string(&what).map_err(io::Error::other)?);
        self.record.created.push(what);
        self.save()
    }

    /// Takes `what` off the list again: creating it failed (it may be someone else's now).
    pub fn not_created(&mut self, what: &Created) -> io::Result<()> {
        if let Some(at) = self.record.created.iter().rposition(|c| c == what) {
            self.record.created.remove(at);
            self.listed_json.remove(at);
            self.save()?;
        }
        Ok(())
    }

    /// Ends ownership once everything is undone: removes the file, or, if some of it could not
    /// be removed (`remaining`), lists just that, for the next start to remove.
    pub fn finish(mut self, remaining: Vec<Created>) -> io::Result<()> {
        if remaining.is_empty() {
            return fs::remove_file(&self.path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot remove state file {}: {e}", self.path.display()))
            });
        }
        self.listed_json = remaining.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
        self.record.created = remaining;
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn record(pid: u32, started: Option<u64>) -> Record {
        Record { bridge: "br0".into(), pid, started, created: Vec::new() }
    }

    fn process(command: &str, started: Option<u64>) -> ProcessInfo {
        ProcessInfo { command: command.into(), started }
    }

    #[test]
    fn the_owner_runs_only_if_its_pid_runs_the_same_program_since_the_same_time() {
        let me = (100, "vswitchd");
        let r = record(42, Some(5000));
        assert_eq!(owner(&r, me, Some(&process("vswitchd", Some(5000)))), Owner::Running(42));
        assert_eq!(owner(&r, me, None), Owner::Gone, "no such process");
        assert_eq!(owner(&r, me, Some(&process("bash", Some(5000)))), Owner::Gone, "another program");
        assert_eq!(owner(&r, me, Some(&process("vswitchd", Some(6000)))), Owner::Gone, "the pid was reused");
        assert_eq!(owner(&r, me, Some(&process("vswitchd", None))), Owner::Gone, "no start time to compare");
        // A record without a start time: the command name decides.
        let r = record(42, None);
        assert_eq!(owner(&r, me, Some(&process("vswitchd", Some(1)))), Owner::Running(42));
        assert_eq!(owner(&r, me, Some(&process("sleep", Some(1)))), Owner::Gone);
        // A container restarted: its vswitchd has the dead one's pid again.
        let r = record(100, Some(5000));
        assert_eq!(owner(&r, me, Some(&process("vswitchd", Some(5000)))), Owner::Gone, "the record is our pid's");
    }

    #[test]
    fn the_start_time_is_field_22_whatever_the_command_name_holds() {
        let fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        let tail = fields.join(" ");
        assert_eq!(start_time_from_stat(&format!("1234 (vswitchd) {tail}")), Some(22));
        assert_eq!(start_time_from_stat(&format!("1234 (a) b (c) d) {tail}")), Some(22));
        assert_eq!(start_time_from_stat("1234 (vswitchd) S 1 2"), None);
        assert_eq!(start_time_from_stat("garbage"), None);
        let mine = fs::read_to_string("/proc/self/stat").unwrap();
        assert!(start_time_from_stat(&mine).is_some(), "{mine}");
    }

    #[test]
    fn the_state_file_sits_beside_the_control_socket() {
        assert_eq!(path_for(Path::new("/run/vswitchd/br0.ctl"), "br0"), Path::new("/run/vswitchd/br0.state"));
        assert_eq!(path_for(Path::new("/tmp/x/ctl.sock"), "b"), Path::new("/tmp/x/b.state"));
        assert_eq!(path_for(Path::new("ctl.sock"), "b"), Path::new("./b.state"));
    }

    #[test]
    fn records_have_a_stable_wire_form() {
        let r = Record {
            bridge: "br0".into(),
            pid: 7,
            started: Some(9),
            created: vec![
                Created::Namespace { name: "red".into() },
                Created::Tap { name: "tap-red".into(), netns: Some("red".into()) },
                Created::Veth { switch_end: "v-sw".into(), host_end: "v".into() },
            ],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"bridge":"br0","pid":7,"started":9,"created":[{"kind":"namespace","name":"red"},{"kind":"tap","name":"tap-red","netns":"red"},{"kind":"veth","switch_end":"v-sw","host_end":"v"}]}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
    }

    /// A fresh directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("vswitchd-state-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn on_disk(path: &Path) -> Record {
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn an_owner_lists_before_creating_and_leaves_no_file_when_all_is_undone() {
        let dir = TempDir::new();
        let path = dir.0.join("sub").join("br0.state");
        let claim = claim(&path, "br0").unwrap();
        assert!(claim.left_over().is_none());
        let mut state = claim.take().unwrap();
        let written = on_disk(&path);
        assert_eq!((written.pid, written.created.len()), (std::process::id(), 0));
        assert!(written.started.is_some());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let red = Created::Namespace { name: "red".into() };
        let tap = Created::Tap { name: "t".into(), netns: None };
        state.will_create(red.clone()).unwrap();
        state.will_create(tap.clone()).unwrap();
        assert_eq!(on_disk(&path).created, vec![red.clone(), tap.clone()]);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", serde_json::to_string(&on_disk(&path)).unwrap()), "not as serde writes it");
        state.not_created(&tap).unwrap();
        assert_eq!(on_disk(&path).created, vec![red.clone()]);
        state.finish(Vec::new()).unwrap();
        assert!(!path.exists(), "the state file outlived a clean stop");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert!(names.is_empty(), "temporary files left: {names:?}");
    }

    #[test]
    fn what_could_not_be_undone_stays_listed() {
        let dir = TempDir::new();
        let path = dir.0.join("br0.state");
        let mut state = claim(&path, "br0").unwrap().take().unwrap();
        let veth = Created::Veth { switch_end: "v-sw".into(), host_end: "v".into() };
        state.will_create(veth.clone()).unwrap();
        state.finish(vec![veth.clone()]).unwrap();
        assert_eq!(on_disk(&path).created, vec![veth]);
    }

    #[test]
    fn a_running_owner_refuses_the_claim_and_a_dead_one_hands_over_its_list() {
        let dir = TempDir::new();
        let path = dir.0.join("br0.state");
        let listed = vec![Created::Namespace { name: "red".into() }];
        // A `sleep` plays the owner, for a claimant whose program is `sleep` too.
        let mut owner = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let pid = owner.id();
        let started = wait_until_exec(pid, "sleep");
        let running = Record { bridge: "br0".into(), pid, started, created: listed.clone() };
        write(&path, &running).unwrap();
        let refused = claim_as(&path, "br0", "sleep").unwrap_err();
        assert!(matches!(refused, StateError::AlreadyRunning { pid: p, .. } if p == pid), "{refused}");
        assert!(refused.to_string().contains(&format!("bridge br0 is already run by vswitchd (pid {pid})")));
        assert_eq!(on_disk(&path), running, "a refused claim changed the file");
        // Another program, or the same pid since another time, is no owner.
        let claimed = claim_as(&path, "br0", "vswitchd").expect("the pid runs another program");
        drop(claimed);
        write(&path, &Record { started: started.map(|s| s + 1), ..running.clone() }).unwrap();
        drop(claim_as(&path, "br0", "sleep").expect("the pid was reused"));
        write(&path, &running).unwrap();
        owner.kill().unwrap();
        owner.wait().unwrap();
        let claimed = claim_as(&path, "br0", "sleep").expect("a dead owner's bridge is free");
        assert_eq!(claimed.left_over().map(|r| r.created.clone()), Some(listed.clone()));
        // Nothing could be removed: the list stays for the next start.
        claimed.keep_left_over(listed.clone()).unwrap();
        assert_eq!(on_disk(&path), running);
        let state = claim(&path, "br0").unwrap().take().unwrap();
        assert_eq!(on_disk(&path).pid, std::process::id());
        assert!(state.created().is_empty());
    }

    /// Waits until process `pid` runs `command` (a spawned child execs a moment after it
    /// exists); returns its start time.
    fn wait_until_exec(pid: u32, command: &str) -> Option<u64> {
        for _ in 0..500 {
            if let Some(info) = process_info(pid).filter(|i| i.command == command) {
                return info.started;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("process {pid} never ran {command}");
    }

    #[test]
    fn a_state_file_others_could_write_or_that_does_not_parse_is_left_alone() {
        let dir = TempDir::new();
        let path = dir.0.join("br0.state");
        fs::write(&path, "{not json").unwrap();
        let e = claim(&path, "br0").unwrap_err();
        assert!(e.to_string().contains("cannot parse"), "{e}");
        write(&path, &record(1, None)).unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        let e = claim(&path, "br0").unwrap_err();
        assert!(e.to_string().contains("leaving it alone"), "{e}");
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.0.join("elsewhere"), &path).unwrap();
        let e = claim(&path, "br0").unwrap_err();
        assert!(e.to_string().contains("leaving it alone"), "{e}");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_symlink(), "the link was replaced");
    }
}
