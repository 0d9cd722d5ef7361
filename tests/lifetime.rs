//! Instance processes live and die with the shell that started them, and a
//! Ctrl-C cancels the shell's statement without reaching them. So do
//! command instances, and every process their command started.
//!
//! Each test starts the `rpcop` shell with a service of `isolation =
//! 'process'` instances, finds its children in `/proc`, and then kills the
//! shell (`SIGTERM`, `SIGKILL`) or interrupts it (`SIGINT` to its process
//! group, as a terminal's Ctrl-C does). Waits poll a condition with a
//! deadline; none sleeps for a fixed time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

mod common;

/// A running shell: its input, and its output lines as they come.
struct Shell {
    child: Child,
    input: ChildStdin,
    lines: Receiver<String>,
}

impl Shell {
    /// The shell in a process group of its own (as a terminal starts it),
    /// with a pool of two process instances up and answering.
    fn with_process_instances() -> Self {
        Self::with_service(
            "CREATE RPC SERVICE p FOR FUNCTION upper, model_sim \
             WITH (isolation = 'process', parallelism = 2);",
            "SELECT upper('ready') AS r;",
            "READY",
        )
    }

    /// The shell, once `create` ran and `ready` printed `answer`.
    fn with_service(create: &str, ready: &str, answer: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rpcop"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("the shell starts");
        let input = child.stdin.take().expect("stdin");
        let (send, lines) = channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut shell = Self {
            child,
            input,
            lines,
        };
        shell.send(create);
        shell.send(ready);
        shell.expect(answer);
        shell
    }

    fn send(&mut self, sql: &str) {
        writeln!(self.input, "{sql}").expect("the shell reads");
    }

    /// Waits for an output line containing `text`; the lines before it.
    fn expect(&self, text: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return seen,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("the shell never printed {text:?}; it printed {seen:#?}");
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid")
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill sends a signal to a process we started.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }
}

/// The processes whose parent is `parent`, from `/proc`.
fn children_of(parent: i32) -> Vec<i32> {
    let mut children: Vec<i32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect();
    children.sort();
    children
}

/// The state and parent of `pid`, from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // after the command name in parentheses: state, then the parent's pid
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

/// Is `pid` gone (or a zombie no one has reaped yet)?
fn gone(pid: i32) -> bool {
    stat(pid).is_none_or(|(state, _)| state == 'Z' || state == 'X')
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

fn instances_die_with_the_shell(signal: i32) {
    let mut shell = Shell::with_process_instances();
    let shell_pid = shell.pid();
    let instances = children_of(shell_pid);
    assert_eq!(instances.len(), 2, "two instance processes: {instances:?}");
    shell.signal(signal);
    shell.child.wait().expect("the shell ends");
    wait_until("the instances are gone", || {
        instances.iter().all(|p| gone(*p))
    });
    // the token never touched the disk
    let leftovers: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .expect("the temp dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&format!("rpcop-{shell_pid}-")))
        .collect();
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
}

#[test]
fn instances_die_when_the_shell_is_terminated() {
    instances_die_with_the_shell(libc::SIGTERM);
}

#[test]
fn instances_die_when_the_shell_is_killed() {
    instances_die_with_the_shell(libc::SIGKILL);
}

#[test]
fn ctrl_c_cancels_the_statement_not_the_instances() {
    let mut shell = Shell::with_process_instances();
    let instances = children_of(shell.pid());
    assert_eq!(instances.len(), 2, "{instances:?}");
    // a statement that would take minutes: 100 requests of 1 s each
    shell.send("ALTER RPC SERVICE p SET (batch_size = 1, max_in_flight = 1);");
    shell.send("SELECT 'altered' AS m;");
    shell.expect("altered");
    let started = Instant::now();
    shell.send(
        "SELECT count(model_sim(CAST(value AS VARCHAR), 1000, 0)) \
         FROM generate_series(1, 100);",
    );
    // Ctrl-C as a terminal sends it, to the shell's process group; again
    // until the statement is cancelled (a SIGINT that comes before the
    // statement runs cancels nothing)
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "never cancelled: {seen:#?}");
        // SAFETY: kill sends SIGINT to the shell's process group.
        assert_eq!(unsafe { libc::kill(-shell.pid(), libc::SIGINT) }, 0);
        match shell.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("statement cancelled") => break,
            Ok(line) => seen.push(line),
            Err(_) => {}
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "cancelled late"
    );
    // the shell goes on, with the same instances, which saw no SIGINT
    shell.send("SELECT upper('still here') AS r;");
    shell.expect("STILL HERE");
    assert_eq!(children_of(shell.pid()), instances);
    assert!(instances.iter().all(|p| !gone(*p)));
    shell.send("\\q");
    shell.child.wait().expect("the shell ends");
}

/// A command instance and what its command started in the background (a
/// process that ignores SIGTERM and never reads the lifeline) all go when
/// the shell goes, however it goes.
fn command_instances_die_with_the_shell(signal: i32) {
    let dir = std::env::temp_dir().join(format!("rpcop-lifetime-{}-{signal}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let command = format!(
        "sh -c \"trap '' TERM HUP; exec sleep 600\" & echo $! > {}/background-$RPCOP_INSTANCE; \
         cd {} && exec {} kit_server.py",
        dir.display(),
        common::python_tests().display(),
        common::python().display()
    );
    let mut shell = Shell::with_service(
        &format!(
            "CREATE RPC SERVICE c FOR FUNCTION reverse_text \
             WITH (command = '{}', parallelism = 2);",
            command.replace('\'', "''")
        ),
        "SELECT upper(reverse_text('ydaer')) AS r;",
        "READY",
    );
    let read_pid = |name: &str| -> i32 {
        let text = std::fs::read_to_string(dir.join(name)).expect("the pid file");
        text.trim().parse().expect("a pid")
    };
    let mut processes = children_of(shell.pid());
    assert_eq!(processes.len(), 2, "two command instances: {processes:?}");
    processes.extend([read_pid("background-0"), read_pid("background-1")]);
    assert!(processes.iter().all(|p| !gone(*p)), "{processes:?} run");
    shell.signal(signal);
    shell.child.wait().expect("the shell ends");
    wait_until(
        "the instances and their background processes are gone",
        || processes.iter().all(|p| gone(*p)),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn command_instances_die_when_the_shell_is_terminated() {
    command_instances_die_with_the_shell(libc::SIGTERM);
}

#[test]
fn command_instances_die_when_the_shell_is_killed() {
    command_instances_die_with_the_shell(libc::SIGKILL);
}
