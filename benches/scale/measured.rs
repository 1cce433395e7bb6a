//! The product's own peak memory and CPU, in a process of its own.
//!
//! Linux counts a child's max RSS from before its exec: a process spawned straight from this
//! benchmark — which holds the test API server's whole world — reports at least the
//! benchmark's own size, whatever it uses itself (fork or posix_spawn alike). So the product is
//! started by a fresh copy of this binary, a few MiB in size, which waits for it, writes down
//! its resource usage, and exits with its exit code. SIGTERM sent to that launcher is passed on.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The launcher's first argument: `--measure-child USAGE_FILE PROGRAM ARGS...`.
pub const FLAG: &str = "--measure-child";

/// What the product's process used, as wait4(2) tells it.
pub struct Usage {
    pub cpu: Duration,
    pub max_rss_mib: f64,
}

/// A command that runs `program` (its arguments added by the caller) under the launcher, which
/// writes its usage to `usage`.
pub fn command(program: &str, usage: &Path) -> Command {
    let launcher = std::env::current_exe().expect("the benchmark's own path");
    let mut command = Command::new(launcher);
    command.arg(FLAG).arg(usage).arg(program);
    command
}

/// The usage a launcher wrote, once it has exited.
pub fn read(usage: &Path) -> Usage {
    let text = std::fs::read_to_string(usage)
        .unwrap_or_else(|e| panic!("the launcher's usage file {}: {e}", usage.display()));
    let numbers: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().expect("a number in the usage file"))
        .collect();
    let [cpu_us, max_rss_kib] = numbers[..] else {
        panic!("the usage file holds {text:?}, not CPU and max RSS");
    };
    Usage {
        cpu: Duration::from_micros(cpu_us),
        max_rss_mib: max_rss_kib as f64 / 1024.0,
    }
}

/// The child the launcher passes SIGTERM to (0 before it is started).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_on(signal: libc::c_int) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) is async-signal-safe; the child is ours and not yet reaped.
        unsafe {
            libc::kill(child, signal);
        }
    }
}

/// The launcher: `args` are what follows [`FLAG`]. Never returns.
pub fn launch(args: &[String]) -> ! {
    let [usage_file, program, rest @ ..] = args else {
        panic!("{FLAG} USAGE_FILE PROGRAM ARGS...");
    };
    // SAFETY: the handler only reads an atomic and calls kill(2).
    unsafe {
        libc::signal(
            libc::SIGTERM,
            pass_on as extern "C" fn(libc::c_int) as usize,
        );
    }
    let child = Command::new(program)
        .args(rest)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    CHILD.store(pid, Ordering::SeqCst);
    let mut status = 0;
    // SAFETY: wait4 writes only the status and the struct it is given; the child is ours.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        while libc::wait4(pid, &mut status, 0, &mut usage) < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
        usage
    };
    let cpu = super::cpu(&usage);
    // ru_maxrss is in KiB on Linux.
    std::fs::write(
        usage_file,
        format!("{} {}\n", cpu.as_micros(), usage.ru_maxrss),
    )
    .unwrap_or_else(|e| panic!("writing {usage_file}: {e}"));
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    std::process::exit(code)
}
