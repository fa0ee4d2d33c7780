//! vswitchd started the obvious way inside a namespace, `ip netns exec NS vswitchd ...`, runs in
//! the private mount namespace `ip` gives it; the namespaces it creates are mounted where
//! everyone sees them all the same, and are gone everywhere once it stops.

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use support::*;
use vswitchd_control::netns;

/// A directory of the test's, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// vswitchd started with `ip netns exec`, its stderr read as it comes; killed on drop.
struct UnderIpNetnsExec {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl UnderIpNetnsExec {
    /// Runs `ip netns exec NETNS_NAME vswitchd ARGS`.
    fn start(netns_name: &str, args: &[&str]) -> UnderIpNetnsExec {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns_name, VSWITCHD])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec vswitchd");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        UnderIpNetnsExec { child, log }
    }

    fn log(&self) -> String {
        thread::sleep(Duration::from_millis(100)); // the last of stderr
        self.log.lock().unwrap().clone()
    }
}

impl Drop for UnderIpNetnsExec {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether namespace `name` is mounted in this process's mount namespace.
fn mounted_here(name: &str) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = format!(" {} ", netns::path(name).display());
    mountinfo.lines().any(|line| line.contains(&target))
}

#[test]
fn namespaces_created_under_ip_netns_exec_are_seen_by_everyone_and_removed_everywhere() {
    with_tag(|tag| {
        let mut namespaces = NamespaceGuard::default();
        let home = format!("sw-{tag}");
        let created = format!("nx-{tag}");
        let tap = format!("tx{tag}");
        namespaces.create(&home);
        namespaces.adopt(&created);
        let dir = TempDir(std::env::temp_dir().join(format!("vswitchd-netns-exec-{tag}")));
        std::fs::create_dir_all(&dir.0).unwrap();
        let config = dir.0.join("topology.toml");
        std::fs::write(
            &config,
            format!(
                "[bridge]\nname = \"nx{tag}\"\n\n[[netns]]\nname = \"{created}\"\n\n\
                 [[port]]\nname = \"{tap}\"\ntype = \"tap\"\nnetns = \"{created}\"\naddress = \"10.77.0.1/24\"\n"
            ),
        )
        .unwrap();
        let socket = dir.0.join("x.ctl");
        let mut daemon = UnderIpNetnsExec::start(
            &home,
            &["--config", config.to_str().unwrap(), "--socket", socket.to_str().unwrap(), "--log-level", "debug"],
        );
        wait_for("vswitchd's control socket", Duration::from_secs(20), || {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("vswitchd exited early with {status}: {}", daemon.log());
            }
            socket.exists().then_some(())
        });
        let mount_namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
        assert_ne!(
            mount_namespace(&daemon.child.id().to_string()),
            mount_namespace("self"),
            "ip netns exec gave vswitchd no mount namespace of its own: this test tests nothing"
        );

        // From this process's mount namespace: the namespace can be entered, the TAP is in it.
        assert!(mounted_here(&created), "{created} is not mounted here: {}", daemon.log());
        ip(&["netns", "exec", &created, "true"]);
        assert_eq!(links_in(&created), [tap], "{}", daemon.log());

        let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = wait_for("vswitchd to exit", Duration::from_secs(20), || daemon.child.try_wait().unwrap());
        assert!(status.success(), "exit {status}: {}", daemon.log());
        assert!(!mounted_here(&created), "{created} is still mounted here");
        assert!(!netns::exists(&created), "{created} is left behind");
    });
}
