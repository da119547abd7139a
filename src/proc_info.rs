//! What Linux's `/proc` says about this machine and process: total memory and the peak
//! resident set. `None` where `/proc` is not available.

/// The value of `key` (e.g. `MemTotal`) in a `/proc` file of `key: N kB` lines, in KiB.
fn kib(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This machine's memory, bytes.
pub fn memory_total_bytes() -> Option<u64> {
    kib("/proc/meminfo", "MemTotal").map(|k| k * 1024)
}

/// This process's peak resident set since start (or since [`reset_peak_rss`]), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    kib("/proc/self/status", "VmHWM").map(|k| k * 1024)
}

/// Reset the kernel's peak-RSS counter of this process; false when unsupported.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine_on_linux() {
        if !std::path::Path::new("/proc/meminfo").exists() {
            return;
        }
        assert!(memory_total_bytes().unwrap() > 1 << 20);
        assert!(peak_rss_bytes().unwrap() > 0);
    }
}
