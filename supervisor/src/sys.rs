//! The few libc calls the supervisor needs that no safe wrapper offers.

/// Limits glibc's malloc to one arena. Each thread that allocates would
/// otherwise get an arena of its own that keeps freed memory, and a pull's
/// short-lived unpacking threads would leave the idle daemon tens of MiB
/// larger. Call before any thread starts.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes allocator tuning; M_ARENA_MAX takes
        // any positive value.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

/// Returns the allocator's free memory to the system, after a transfer
/// that used large buffers.
pub fn trim_memory() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim has no preconditions; it only releases free
        // pages of the heap.
        unsafe { libc::malloc_trim(0) };
    }
}
