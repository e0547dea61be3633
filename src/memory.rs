//! Giving freed heap memory back to the system after a large batch of changes, and keeping
//! it in few allocator arenas, so that what is freed makes whole pages to give.
//!
//! Reading the lists of large clusters allocates and frees several times the memory the
//! entries keep (JSON pages, decoded objects); glibc's allocator keeps what was freed in its
//! arenas, so the process stays at its peak. Measured with 100 000 entries in each of 3
//! clusters: RSS when ready 196 MiB, of it ~120 MiB held by the table and the entries.
//! `malloc_trim(0)` returns the free pages of every arena. The container image runs this same
//! glibc build, so it does there too. Under another global allocator the call would do
//! nothing: mimalloc was measured in glibc's place (README, "Allocator": RSS +8 % at 300 000
//! entries even with its own `mi_collect`, forwarding CPU unchanged) and not adopted.

/// Entries applied in one batch from which the free memory is given back afterwards.
pub const LARGE_BATCH: usize = 10_000;

/// The most glibc malloc arenas the process uses (glibc's default: 8 per core).
///
/// Each thread that allocates while another holds its arena's lock gets an arena of its
/// own, and what the lists free is left spread over all of them, in part-used pages that
/// `malloc_trim` cannot return. Measured with 100 000 entries in each of 3 clusters
/// (benches/scale.rs --replicated, 2 cores): RSS when ready 164 MiB with the default; with 2
/// arenas 143–148 MiB in most runs but 165–204 MiB in 6 of 25 (as the lists' decoding fell
/// to the threads); with 1, 135–136 MiB in 13 of 14 runs (163 in one), the lists read as fast
/// (3.4–5.1 s against 3.7–4.8 s). No in-zone query and no UDP forward allocates, so neither
/// path contends for it; the runtime's threads forwarding over UDP did ~4 % more CPU a forward
/// than with 2 arenas (medians of two runs of `benches/load.py --forwarding`, within their
/// rounds' spread).
pub const ARENAS: i32 = 1;

/// Limits glibc to [`ARENAS`] malloc arenas (glibc); nothing elsewhere. Call it before any
/// thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn limit_arenas() {
    /// `M_ARENA_MAX` of glibc's `<malloc.h>`.
    const M_ARENA_MAX: std::ffi::c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: mallopt takes no pointer and only sets a glibc tunable under its lock.
    unsafe {
        mallopt(M_ARENA_MAX, ARENAS);
    }
}

/// Limits glibc to [`ARENAS`] malloc arenas (glibc); nothing elsewhere.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

/// Returns the allocator's free pages to the system (glibc); nothing elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointer and only walks glibc's own heap under its locks;
    // glibc documents it as safe to call at any time (MT-Safe).
    unsafe {
        malloc_trim(0);
    }
}

/// Returns the allocator's free pages to the system (glibc); nothing elsewhere.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
