//! The real `warren` binary as a child process, for the tests of what only the command does: the
//! configuration file, `check-config`, SIGHUP. It listens on a free loopback port, in a
//! temporary data directory; its log (stdout and stderr) is collected for the test to read;
//! it is killed when dropped. Every wait is bounded.
//!
//! Included with `#[path = "common/warren_process.rs"] mod warren_process;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the broker may take to listen, or to log what a test waits for.
pub const PROCESS_WAIT: Duration = Duration::from_secs(15);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("warren-{test}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on (at the moment of asking).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("its address").port()
}

/// Runs `warren ARGS` to its end (for `check-config` and starts that must fail).
pub fn run_warren(args: &[&str]) -> Output {
    // No management API: tests run side by side, and its default port is one for all.
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--management", "off"])
        .args(args)
        .env_remove("WARREN_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warren");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait for warren").is_some() {
            return child.wait_with_output().expect("warren's output");
        }
        if started.elapsed() > PROCESS_WAIT {
            let _ = child.kill();
            let output = child.wait_with_output().expect("warren's output");
            panic!(
                "warren {args:?} did not exit within {PROCESS_WAIT:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `warren --config FILE --listen 127.0.0.1:PORT --data-dir DIR`.
pub struct WarrenProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The management API's address, when started with one ([`WarrenProcess::start_with_management`]).
    pub management: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
}

impl WarrenProcess {
    /// Starts the broker and waits until it accepts connections.
    pub fn start(config: &Path, data_dir: &Path) -> WarrenProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command
            .arg("--config")
            .arg(config)
            .env_remove("WARREN_CONFIG");
        WarrenProcess::launch(command, data_dir)
    }

    /// The same, naming the file in `WARREN_CONFIG` instead of `--config`.
    pub fn start_with_env(config: &Path, data_dir: &Path) -> WarrenProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command.env("WARREN_CONFIG", config);
        WarrenProcess::launch(command, data_dir)
    }

    /// Without a configuration file, with the management API on a free loopback port (see
    /// `management`); waits until both listen.
    pub fn start_with_management(data_dir: &Path) -> WarrenProcess {
        let management: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("an address");
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command.env_remove("WARREN_CONFIG");
        WarrenProcess::launch_with(command, data_dir, Some(management))
    }

    /// With a configuration file and the management API on a free loopback port.
    pub fn start_with_config_and_management(config: &Path, data_dir: &Path) -> WarrenProcess {
        let management: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("an address");
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command
            .arg("--config")
            .arg(config)
            .env_remove("WARREN_CONFIG");
        WarrenProcess::launch_with(command, data_dir, Some(management))
    }

    /// Without a configuration file, allowed at most `open_files` descriptors: both the soft and
    /// the hard `RLIMIT_NOFILE` are set in the child before it runs warren, so that raising the
    /// soft limit to the hard one at start changes nothing.
    pub fn start_with_open_files(data_dir: &Path, open_files: u64) -> WarrenProcess {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command.env_remove("WARREN_CONFIG");
        let limit = libc::rlimit {
            rlim_cur: open_files as libc::rlim_t,
            rlim_max: open_files as libc::rlim_t,
        };
        // SAFETY: between fork and exec the hook only calls setrlimit (async-signal-safe) on a
        // struct it owns.
        unsafe {
            command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        WarrenProcess::launch(command, data_dir)
    }

    /// How many descriptors the broker has open now (`/proc/PID/fd`).
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, Iterator::count)
    }

    fn launch(command: Command, data_dir: &Path) -> WarrenProcess {
        WarrenProcess::launch_with(command, data_dir, None)
    }

    fn launch_with(
        mut command: Command,
        data_dir: &Path,
        management: Option<SocketAddr>,
    ) -> WarrenProcess {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let management_arg = management.map_or_else(|| "off".to_owned(), |a| a.to_string());
        let mut child = command
            .arg("--management")
            .arg(management_arg)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warren");
        let log = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("stdout"), Arc::clone(&log));
        collect(child.stderr.take().expect("stderr"), Arc::clone(&log));
        let mut process = WarrenProcess {
            child,
            addr,
            management,
            log,
        };
        process.wait_until_listening(addr);
        if let Some(management) = management {
            process.wait_until_listening(management);
        }
        process
    }

    fn wait_until_listening(&mut self, addr: SocketAddr) {
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "warren exited ({status}) before listening; its log:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < PROCESS_WAIT,
                "warren did not listen on {addr} within {PROCESS_WAIT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn hangup(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let sent = unsafe { libc::kill(self.pid(), libc::SIGHUP) };
        assert_eq!(sent, 0, "kill -HUP {}", self.pid());
    }

    /// Everything the broker has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// Waits until the log holds `needle` `count` times; the log.
    pub async fn wait_for_log(&self, needle: &str, count: usize) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return log;
            }
            assert!(
                started.elapsed() < PROCESS_WAIT,
                "no {count}× '{needle}' in the log within {PROCESS_WAIT:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the broker with SIGTERM and waits for it (bounded); true if it exited cleanly.
    /// Async, so that the test's own clients can answer the broker's `connection.close`.
    pub async fn stop(mut self) -> bool {
        // SAFETY: as in `hangup`.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < PROCESS_WAIT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for WarrenProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Appends what `stream` prints to `log`, line by line, on a thread of its own.
fn collect(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut log) = log.lock() {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
}
