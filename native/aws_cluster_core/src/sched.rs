//! The scheduling class of the threads aws_cluster starts next to the BEAM's.
//!
//! The runtime's threads do network I/O whose latency nobody notices (a poll every few
//! seconds), while a BEAM scheduler thread is always latency-critical. Under the default
//! policy a runtime worker woken by a NIF (a spawn, from a scheduler thread) could preempt
//! the very scheduler that woke it and run its whole task before the NIF returned: the
//! NIF's wall time then included the task. `SCHED_BATCH` threads never preempt on wakeup;
//! they run on an idle core or when the scheduler thread's slice ends.

/// Moves the calling thread to `SCHED_BATCH` (Linux; a no-op elsewhere). Returns whether
/// the thread now has that policy. Needs no privilege: it only lowers the thread's claim.
pub fn batch_current_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` outlives the call.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_changes_class() {
        let before = unsafe { libc::sched_getscheduler(0) };
        let inside = std::thread::spawn(|| {
            assert!(batch_current_thread());
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .expect("thread");
        assert_eq!(inside, libc::SCHED_BATCH);
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, before);
    }
}
