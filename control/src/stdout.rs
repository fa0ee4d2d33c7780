//! Writing the programs' output to stdout the way a Unix tool does: when the reader goes away
//! (`vswitchctl fdb show | head -1`), the process ends at once, quietly, with the status a shell
//! reports for a tool SIGPIPE ended (141), so a pipeline under `set -o pipefail` sees what it
//! sees with `ip link | head -1`. Any other write error is reported and exits 1. (`println!`
//! would panic instead; SIGPIPE's default action cannot be restored without `unsafe`, would end
//! `vswitchctl` silently when the daemon hangs up mid-request, and must never end the daemon,
//! which writes to control clients.)

use std::fmt;
use std::io::{self, Write};

/// The exit status a shell reports for a process SIGPIPE killed.
pub const SIGPIPE_EXIT_STATUS: i32 = 128 + libc::SIGPIPE;

/// Writes `text` to stdout, ending the process as the module says if it cannot.
pub fn print(text: fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(text) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(SIGPIPE_EXIT_STATUS);
        }
        let program = std::env::args_os()
            .next()
            .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "vswitchd".into());
        eprintln!("{program}: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Prints a line to stdout, as `println!` does, through [`print`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::stdout::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
