//! Named network namespaces, the way `ip netns` keeps them: a namespace stays alive through a
//! bind mount of its nsfs file on `/run/netns/NAME`, so `ip netns exec NAME` sees ours and we
//! see theirs.
//!
//! `setns`/`unshare` change only the calling thread, so every operation that must happen
//! inside a namespace runs on a short-lived scoped thread ([`run_in`]); vswitchd's own threads
//! never leave their namespace. Sockets and fds opened there keep their namespace for life.
//!
//! Started by `ip netns exec NAME vswitchd ...`, vswitchd runs in the private mount namespace
//! `ip` makes, a slave of the one it was started from: mounts reach it, but none of its own
//! leave it, so namespaces mounted there would be invisible to everyone else and leak. The
//! mounts (and their removal) therefore happen in the mount namespace ours receives them from
//! ([`in_system_mounts`]), and come back to ours from there.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Where named namespaces are mounted.
pub const RUN_DIR: &str = "/run/netns";

/// The file that holds namespace `name`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(name)
}

/// Whether namespace `name` exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Opens namespace `name` (for `setns` or `IFLA_NET_NS_FD`).
pub fn open(name: &str) -> io::Result<File> {
    File::open(path(name)).map_err(|e| io::Error::new(e.kind(), format!("cannot open namespace {name}: {e}")))
}

/// Makes `/run/netns` a shared mount point, so namespace mounts propagate to every mount
/// namespace (what iproute2 does before its first `netns add`).
fn make_run_dir_shared() -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o755).create(RUN_DIR)?;
    let shared = || mount(Some(""), RUN_DIR, Some("none"), MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    match shared() {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            mount(Some(RUN_DIR), RUN_DIR, Some("none"), MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)?;
            Ok(shared()?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates namespace `name`. Fails with `AlreadyExists` if it exists.
pub fn create(name: &str) -> io::Result<()> {
    let target = path(name);
    in_system_mounts(|| {
        make_run_dir_shared()?;
        OpenOptions::new().write(true).create_new(true).mode(0o000).open(&target)?;
        Ok(())
    })?;
    let mounted = new_network_namespace().and_then(|netns| in_system_mounts(|| bind_mount(&netns, &target)));
    if let Err(e) = mounted {
        let _ = in_system_mounts(|| fs::remove_file(&target));
        return Err(e);
    }
    Ok(())
}

/// A new network namespace, held only by the returned file: the thread that made it is gone.
fn new_network_namespace() -> io::Result<File> {
    thread::scope(|s| {
        s.spawn(|| -> io::Result<File> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            // The calling thread's namespace: /proc/self would name the main thread's.
            File::open("/proc/thread-self/ns/net")
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// Bind-mounts the namespace `netns` holds on `target`. The source is named through
/// `/proc/self/fd`, a path valid in whichever mount namespace the calling thread is in.
fn bind_mount(netns: &File, target: &Path) -> io::Result<()> {
    let source = format!("/proc/self/fd/{}", netns.as_raw_fd());
    mount(Some(source.as_str()), target, Some("none"), MsFlags::MS_BIND, None::<&str>)?;
    Ok(())
}

/// Deletes namespace `name`: the interfaces in it go with it.
pub fn delete(name: &str) -> io::Result<()> {
    let target = path(name);
    in_system_mounts(|| {
        match umount2(&target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        match fs::remove_file(&target) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    })
}

/// Runs `f`, which mounts or unmounts under [`RUN_DIR`], where everyone sees the result: here,
/// or, when our mount namespace only receives mounts ([`system_mounts`]), on a thread inside the
/// one it receives them from.
fn in_system_mounts<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let Some(system) = system_mounts()? else {
        return f();
    };
    thread::scope(|s| {
        s.spawn(|| -> io::Result<T> {
            // A thread sharing its root and working directory with others cannot change them.
            unshare(CloneFlags::CLONE_FS)?;
            setns(system, CloneFlags::CLONE_NEWNS).map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("cannot enter the mount namespace {RUN_DIR} receives mounts from: {e}"),
                )
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("mount namespace thread panicked")))
    })
}

/// The mount namespace to mount namespaces in, found on first use and kept, so deletion unmounts
/// where creation mounted: `None` for ours, the usual case, where the mount `/run/netns` lies on
/// is shared with the rest of the system (or private to us on purpose), or where ours is pid 1's.
/// When it is a slave instead (`ip netns exec` made it one), the namespace of the farthest
/// process among pid 1 and our ancestors whose mount it receives from (through as many slaves as
/// there are): mounts made there reach ours and everyone's. An error, saying what to run
/// instead, if there is none we can enter.
fn system_mounts() -> io::Result<Option<&'static File>> {
    static SYSTEM_MOUNTS: OnceLock<Result<Option<File>, String>> = OnceLock::new();
    match SYSTEM_MOUNTS.get_or_init(find_system_mounts) {
        Ok(system) => Ok(system.as_ref()),
        Err(e) => Err(io::Error::other(e.clone())),
    }
}

/// Finds what [`system_mounts`] keeps.
fn find_system_mounts() -> Result<Option<File>, String> {
    let Some(master) = fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|mountinfo| mount_of(&mountinfo, RUN_DIR))
        .and_then(|ours| ours.master)
    else {
        return Ok(None);
    };
    let same_file = |a: &File, b: &File| match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    let ours = File::open("/proc/self/ns/mnt").map_err(|e| format!("cannot open /proc/self/ns/mnt: {e}"))?;
    let mut candidates: Vec<(File, MountPropagation)> = Vec::new();
    for pid in std::iter::once(1).chain(ancestors()) {
        let Ok(namespace) = File::open(format!("/proc/{pid}/ns/mnt")) else { continue };
        if pid == 1 && same_file(&namespace, &ours) {
            // Init's mount namespace (a container's, say) is the system's: none is more so.
            return Ok(None);
        }
        let mount = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .ok()
            .and_then(|mountinfo| mount_of(&mountinfo, RUN_DIR));
        if let Some(mount) = mount {
            candidates.push((namespace, mount));
        }
    }
    let mounts: Vec<&MountPropagation> = candidates.iter().map(|(_, mount)| mount).collect();
    match farthest_sender(master, &mounts) {
        Some(i) => Ok(Some(candidates.swap_remove(i).0)),
        None => Err(format!(
            "vswitchd runs in a mount namespace of its own (as `ip netns exec` gives it) whose mounts \
             nobody else sees, and found no process in the one its {RUN_DIR} receives mounts from \
             to enter it through: the namespaces it creates would be invisible to everyone else and \
             leak. Start it with `nsenter --net={RUN_DIR}/NAME vswitchd ...` instead"
        )),
    }
}

/// Our ancestors' process ids, parent first, up to (not including) pid 1.
fn ancestors() -> impl Iterator<Item = u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
    };
    std::iter::successors(parent_of(std::process::id()), move |&pid| parent_of(pid)).take_while(|&pid| pid > 1).take(64)
}

/// Where a mount stands in mount propagation, from a line of `/proc/PID/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountPropagation {
    /// The peer group it shares mounts with (`shared:N`).
    shared: Option<u64>,
    /// The peer group it receives mounts from (`master:N`).
    master: Option<u64>,
}

/// The mount `path` lies on, among those `mountinfo` lists: the topmost with the longest mount
/// point that holds `path`.
fn mount_of(mountinfo: &str, path: &str) -> Option<MountPropagation> {
    let mut found: Option<(usize, MountPropagation)> = None;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(&mount_point) = fields.get(4) else { continue };
        let holds = mount_point == "/"
            || path.strip_prefix(mount_point).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !holds || found.as_ref().is_some_and(|(len, _)| mount_point.len() < *len) {
            continue;
        }
        let optional = fields.iter().skip(6).take_while(|&&f| f != "-");
        let group = |tag: &str| optional.clone().find_map(|f| f.strip_prefix(tag)?.parse().ok());
        found = Some((mount_point.len(), MountPropagation { shared: group("shared:"), master: group("master:") }));
    }
    found.map(|(_, mount)| mount)
}

/// Which of `mounts` sends mounts, directly or through others, to a mount whose master is peer
/// group `master`: the farthest up the chain of masters.
fn farthest_sender(master: u64, mounts: &[&MountPropagation]) -> Option<usize> {
    let mut wanted = master;
    let mut farthest = None;
    for _ in 0..mounts.len() {
        let Some(i) = mounts.iter().position(|m| m.shared == Some(wanted)) else { break };
        farthest = Some(i);
        match mounts[i].master {
            Some(next) if next != wanted => wanted = next,
            _ => break,
        }
    }
    farthest
}

/// Runs `f` on a thread inside namespace `name` and returns its result.
pub fn run_in<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    run_in_file(open(name)?, name, f)
}

/// Runs `f` on a thread inside the namespace at `path` (any nsfs file: `/run/netns/NAME`,
/// `/proc/PID/ns/net`, or a bind mount of one, as a container runtime hands over) and returns
/// its result.
pub fn run_in_path<T, F>(path: &Path, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let shown = path.display().to_string();
    let ns = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("cannot open namespace {shown}: {e}")))?;
    run_in_file(ns, &shown, f)
}

fn run_in_file<T, F>(ns: File, name: &str, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    thread::scope(|s| {
        s.spawn(move || -> io::Result<T> {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
                io::Error::new(io::Error::from(e).kind(), format!("cannot enter namespace {name}: {e}"))
            })?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `ip netns exec` gives: `/` private (as in a container), `/run/netns` a slave of the
    /// starting namespace's shared `/run/netns` (peer group 1), a namespace mounted in it.
    const IP_NETNS_EXEC: &str = "\
45 44 254:0 / / rw,relatime - ext4 /dev/vda rw
47 45 0:21 / /proc rw,relatime - proc proc rw
65 45 254:0 /run/netns /run/netns rw,relatime master:1 - ext4 /dev/vda rw
66 65 0:4 net:[4026532177] /run/netns/sw-a rw master:2 - nsfs nsfs rw
48 45 0:39 / /sys rw,relatime - sysfs sw-a rw
";

    #[test]
    fn the_mount_a_path_lies_on_is_the_longest_that_holds_it() {
        let run_netns = mount_of(IP_NETNS_EXEC, RUN_DIR).unwrap();
        assert_eq!(run_netns, MountPropagation { shared: None, master: Some(1) });
        assert_eq!(mount_of(IP_NETNS_EXEC, "/run/netnsx").unwrap().master, None);
        assert_eq!(mount_of(IP_NETNS_EXEC, "/run").unwrap().master, None);
        let shared_root = "1 0 8:1 / / rw shared:7 master:3 - ext4 /dev/sda rw\n";
        assert_eq!(mount_of(shared_root, RUN_DIR).unwrap(), MountPropagation { shared: Some(7), master: Some(3) });
        // Mounted over: the later line is on top.
        let stacked = format!("{IP_NETNS_EXEC}70 65 0:50 / /run/netns rw shared:9 - tmpfs tmpfs rw\n");
        assert_eq!(mount_of(&stacked, RUN_DIR).unwrap(), MountPropagation { shared: Some(9), master: None });
        assert_eq!(mount_of("", RUN_DIR), None);
    }

    #[test]
    fn the_sender_is_the_farthest_up_the_chain_of_masters() {
        let mount = |shared, master| MountPropagation { shared, master };
        let host = mount(Some(1), None);
        let service = mount(Some(5), Some(1));
        let stranger = mount(Some(9), None);
        assert_eq!(farthest_sender(1, &[&stranger, &host]), Some(1));
        assert_eq!(farthest_sender(5, &[&service, &stranger, &host]), Some(2));
        assert_eq!(farthest_sender(5, &[&service, &stranger]), Some(0));
        assert_eq!(farthest_sender(1, &[&stranger]), None);
        assert_eq!(farthest_sender(1, &[&mount(Some(1), Some(1))]), Some(0));
    }
}
