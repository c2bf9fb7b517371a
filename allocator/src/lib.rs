//! The process's memory allocator: mimalloc, and the one setting of it the `portcullis`
//! binary needs.
//!
//! With the `mimalloc` feature (the default, and the binary's) this crate installs
//! mimalloc as the global allocator: fewer cycles per request than glibc's malloc under
//! the proxy's many small, short-lived allocations (BENCHMARKS.md). Without it (the
//! heap-profiling build, where massif must see the system allocator) it does nothing.
//!
//! **Large blocks come from the kernel and go straight back to it.** mimalloc serves
//! blocks of up to 2 GiB from its shared arenas. A freed large block stays resident
//! there until a purge, and mimalloc purges only from inside later allocations or
//! frees, a second after the block was freed at the earliest; by then other threads
//! have usually carved the same pages into small ones, which keeps them resident for
//! good however little they hold. `portcullis up` lost 20 to 30 MiB that way before
//! its first connection: the start-up (the policy bundle's tests) and every Argon2id
//! sign-in (19 MiB, on a blocking thread) each left their large blocks' pages resident
//! under a handful of small objects (BENCHMARKS.md, eleventh stop). Above
//! [`LARGEST_ARENA_BLOCK_KIB`] a block is now mapped from the kernel for itself and
//! unmapped when freed. Nothing on the request path allocates blocks that large, so
//! requests keep the arenas' speed; mimalloc's own pages (4 MiB at most) stay in them.

#![deny(unsafe_code)]

use std::ffi::c_long;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Blocks larger than this (KiB) bypass mimalloc's arenas: 4 MiB, the size of its
/// largest page, so every page it makes for small and medium blocks still fits.
pub const LARGEST_ARENA_BLOCK_KIB: c_long = 4 * 1024;

/// `mi_option_arena_max_object_size` in mimalloc 3's `mi_option_t` (include/mimalloc.h);
/// libmimalloc-sys names options only up to the older ones. The tests read the option
/// back and check its effect, so a wrong index fails them.
#[cfg(feature = "mimalloc")]
const MI_OPTION_ARENA_MAX_OBJECT_SIZE: libmimalloc_sys::mi_option_t = 45;

/// The setting is made before `main`, from the ELF initialisers: the only moment the
/// process is sure to have a single thread. mimalloc stores options without
/// synchronisation and expects them set at start-up, before any thread can read them.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[used]
#[allow(unsafe_code)]
#[unsafe(link_section = ".init_array")]
static CONFIGURE: extern "C" fn() = configure;

#[cfg(all(feature = "mimalloc", target_os = "linux"))]
extern "C" fn configure() {
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_set` takes two integers and no pointer; it is called once, from
    // the initialisers, while the process has one thread (see `CONFIGURE`).
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_MAX_OBJECT_SIZE, LARGEST_ARENA_BLOCK_KIB);
    }
}

/// The limit in force (KiB), as mimalloc reports it; `None` without mimalloc.
pub fn largest_arena_block_kib() -> Option<c_long> {
    #[cfg(feature = "mimalloc")]
    {
        #[allow(unsafe_code)]
        // SAFETY: reads an option; no pointer, no precondition.
        let kib = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_MAX_OBJECT_SIZE) };
        Some(kib)
    }
    #[cfg(not(feature = "mimalloc"))]
    None
}
