//! Handing freed memory back to the kernel. glibc's malloc keeps what a program frees in its
//! arenas for reuse and returns little of it: one analysis of a 90 MB Go binary, or one traced
//! upload of a 20 MB body, left the daemon's resident memory that much higher for the rest of
//! its life, though nothing held the bytes any more. Under a memory limit that is memory the
//! daemon pays for and does not use; on a node it is what an operator sees.

/// Returns the allocator's free pages to the kernel (glibc's `malloc_trim`, which walks every
/// arena). A few milliseconds for a large heap: called after each file analysis and every few
/// seconds from the daemon's tick, never per record.
pub fn give_back() {
    #[cfg(target_env = "gnu")]
    // Safety: takes no pointer; glibc serialises it with every arena's lock.
    unsafe {
        libc::malloc_trim(0);
    }
}
