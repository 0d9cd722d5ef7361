//! The memory of this process's tree, from `/proc`: the bench process and
//! its descendants (the instance processes its regions started, and
//! theirs). Peaks are each process's peak resident set (`VmHWM`), which
//! `/proc/<pid>/clear_refs` resets to the present one.

/// This process's descendants, found through each process's parent in
/// `/proc/<pid>/stat`.
pub(super) fn descendants() -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // the fields after the command, which may hold spaces
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = Vec::new();
    let mut next = vec![std::process::id()];
    while let Some(parent) = next.pop() {
        for &(pid, _) in parents.iter().filter(|(_, ppid)| *ppid == parent) {
            if !found.contains(&pid) {
                found.push(pid);
                next.push(pid);
            }
        }
    }
    found
}

/// The peak resident set of process `pid` in MB (0 if it is gone).
pub(super) fn peak_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    kb as f64 / 1024.0
}

/// The largest peak resident set among this process's descendants, in MB.
pub(super) fn largest_child_peak_mb() -> f64 {
    descendants().into_iter().map(peak_mb).fold(0.0, f64::max)
}

/// The peak resident set of the whole tree while `f` runs, in MB: each
/// process's peak reset before, and the peaks summed after. A sum of peaks
/// is at least the tree's peak (each process may peak at another moment),
/// and pages two processes share (a shared-memory ring) count in each.
pub(super) async fn tree_peak_of<T>(f: impl Future<Output = T>) -> (T, f64) {
    let tree = || std::iter::once(std::process::id()).chain(descendants());
    for pid in tree() {
        // "5" resets the peak to the present resident set (proc(5))
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
    let out = f.await;
    (out, tree().map(peak_mb).sum())
}
