//! CPU time spent by processes, from Linux `/proc`: the sum of every
//! thread's scheduler run time (`/proc/PID/task/*/schedstat`, in
//! nanoseconds), so a phase's CPU per event can be reported for this
//! process (the client) and for local server processes.

use std::fs;

/// CPU time process `pid` has used so far, in nanoseconds; `None` when it
/// is not a local process this one can read.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
        {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

/// CPU time this process has used so far, in nanoseconds.
pub fn own_cpu_ns() -> Option<u64> {
    process_cpu_ns(std::process::id())
}

/// CPU time of several processes together (`None` if any is unreadable).
pub fn total_cpu_ns(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| process_cpu_ns(p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_and_an_absent_one_is_none() {
        let before = own_cpu_ns().expect("this process's CPU time");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(own_cpu_ns().unwrap() > before);
        assert_eq!(process_cpu_ns(u32::MAX), None);
        assert_eq!(total_cpu_ns(&[std::process::id(), u32::MAX]), None);
    }
}
