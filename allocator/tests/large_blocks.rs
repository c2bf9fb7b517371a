//! Large blocks go back to the kernel as soon as they are freed; blocks of mimalloc's
//! own page sizes stay in its arenas.
//!
//! Resident memory is the process's, so this binary holds one test, run in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::thread;

use portcullis_allocator::{LARGEST_ARENA_BLOCK_KIB, largest_arena_block_kib};

const MIB: usize = 1 << 20;

/// Resident bytes of this process, read without allocating (an allocation could
/// trigger one of mimalloc's own purges and hide what is measured).
struct Resident {
    statm: File,
}

impl Resident {
    fn open() -> Self {
        Self {
            statm: File::open("/proc/self/statm").expect("open /proc/self/statm"),
        }
    }

    fn bytes(&self) -> usize {
        let mut buf = [0u8; 256];
        let n = self
            .statm
            .read_at(&mut buf, 0)
            .expect("read /proc/self/statm");
        let text = std::str::from_utf8(&buf[..n]).expect("statm is text");
        let pages: usize = text
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("resident pages in /proc/self/statm");
        pages * 4096
    }
}

/// Allocates `size` bytes on a thread of its own, writes every page of it, frees it
/// and lets the thread exit: what a sign-in's Argon2id job does.
fn touch_and_free(size: usize) {
    thread::spawn(move || {
        let block = vec![1u8; size];
        black_box(&block);
    })
    .join()
    .unwrap();
}

#[test]
fn a_freed_large_block_leaves_at_once_and_arena_sized_blocks_stay_in_the_arenas() {
    assert_eq!(largest_arena_block_kib(), Some(LARGEST_ARENA_BLOCK_KIB));
    let resident = Resident::open();

    // The shape of an Argon2id job: 19 MiB, freed on a thread that then ends.
    let base = resident.bytes();
    touch_and_free(19 * MIB);
    let after = resident.bytes();
    assert!(
        after < base + 2 * MIB,
        "a freed 19 MiB block is still resident: {base} bytes before, {after} after"
    );

    // A block just under the limit still comes from the arenas, and is kept there
    // for reuse (mimalloc's purge delay), which is what the request path relies on.
    let base = resident.bytes();
    touch_and_free(3 * MIB);
    let kept = resident.bytes();
    assert!(
        kept >= base + 2 * MIB,
        "a freed 3 MiB block left the arenas at once ({base} -> {kept}): the limit \
         reaches blocks it should not"
    );
}
