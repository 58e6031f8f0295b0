//! Resident memory and CPU time of processes, read from `/proc`. The parsers are pure.

use std::io;

/// Clock ticks per second of the CPU times in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux for
/// every architecture the etcd package ships for).
const TICKS_PER_SEC: f64 = 100.0;

/// `VmRSS` of a `/proc/<pid>/status` text, in KiB.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime + stime of a `/proc/<pid>/stat` line, in clock ticks. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 overall, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> io::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss_kib(&text)
        .map(|kib| kib as f64 / 1024.0)
        .ok_or_else(|| io::Error::other(format!("no VmRSS for process {pid}")))
}

/// CPU time process `pid` has used so far (user + system), in seconds.
pub fn cpu_secs(pid: u32) -> io::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&text)
        .map(|t| t as f64 / TICKS_PER_SEC)
        .ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/stat")))
}

/// Total CPU seconds of `pids` (processes that are gone count as 0).
pub fn total_cpu_secs(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| cpu_secs(*p).ok()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_the_status_text() {
        let status = "Name:\tetcd\nVmPeak:\t  900 kB\nVmRSS:\t   24576 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_kib(status), Some(24576));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat =
            "4242 (flotilla (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 350 25 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(375));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_is_measurable() {
        let me = std::process::id();
        assert!(rss_mib(me).unwrap() > 0.0);
        assert!(cpu_secs(me).unwrap() >= 0.0);
        assert_eq!(total_cpu_secs(&[u32::MAX]), 0.0);
    }
}
