//! Named network namespaces, the way `ip netns` keeps them: a namespace stays alive through a
//! bind mount of its nsfs file on `/run/netns/NAME`, so `ip netns exec NAME` sees ours and we
//! see theirs.
//!
//! `setns`/`unshare` change only the calling thread, so every operation that must happen
//! inside a namespace runs on a short-lived scoped thread ([`run_in`]); vswitchd's own threads
//! never leave their namespace. Sockets and fds opened there keep their namespace for life.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
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
    make_run_dir_shared()?;
    let target = path(name);
    OpenOptions::new().write(true).create_new(true).mode(0o000).open(&target)?;
    let mounted = thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            // The calling thread's namespace: /proc/self would name the main thread's.
            mount(Some("/proc/thread-self/ns/net"), &target, Some("none"), MsFlags::MS_BIND, None::<&str>)?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if let Err(e) = mounted {
        let _ = fs::remove_file(&target);
        return Err(e);
    }
    Ok(())
}

/// Deletes namespace `name`: the interfaces in it go with it.
pub fn delete(name: &str) -> io::Result<()> {
    let target = path(name);
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(&target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f` on a thread inside namespace `name` and returns its result.
pub fn run_in<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = open(name)?;
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
