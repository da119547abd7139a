//! Keep freed memory in the process for reuse (glibc).
//!
//! A Stable Diffusion UNet call on the CPU allocates and frees hundreds of activation
//! buffers of 10–500 MB. glibc's malloc serves blocks above its mmap threshold (adaptive,
//! at most 32 MiB) with fresh mappings and unmaps them on free, so every buffer is new pages
//! that the kernel must fault in and zero: `perf` showed 30 % of an SD 1.5 UNet call at
//! 256×256 in page faults and page clearing. Raising the mmap and trim thresholds makes
//! freed blocks go back to the heap and be reused (`adiff unet-call`: 5.4 s → 4.0 s per call
//! on a 2-core Xeon, 2026-12-02). The process keeps its high-water mark of memory until it
//! exits; peak resident memory does not grow from this (measured with the same command).
//! Training gains too (its steps allocate many large temporaries: ≈ 1.5× faster steps on
//! the CPU). `main` applies it once, before any thread starts, for every command.

/// Apply the thresholds; a no-op outside Linux with glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
