//! Argon2id's working memory (19 MiB per hash at OWASP's parameters) as an anonymous
//! mapping of its own, for `Argon2::hash_password_into_with_memory`.
//!
//! Why not the heap (BENCHMARKS.md, "twelfth stop"):
//! - **Memory that stays.** A freed 19 MiB block stays in the allocator's arena; before it
//!   is purged, other threads carve it into small pages, which keep it resident for good.
//!   A mapping of its own leaves the process when it is dropped.
//! - **Huge pages for this memory alone.** Argon2id reads its blocks in a data-dependent
//!   order; over 4 KiB pages the TLB misses make each hash slower, and at 50 sign-ins a
//!   second on two cores that margin decides whether the hashing keeps up. The allocator's
//!   arenas are kept on small pages (mimalloc's `no_thp`), so that idle connections do not
//!   hold whole 2 MiB pages; this mapping asks for transparent huge pages
//!   (`MADV_HUGEPAGE`), which a system whose THP mode is `madvise` or `always` grants.
//!
//! The workspace forbids `unsafe`; viewing the mapping as Argon2 blocks needs one block of
//! it, and this crate holds nothing else.

use std::io;

use argon2::Block;
use memmap2::{Advice, MmapMut};

/// The mapping's length is a whole number of 2 MiB pages, so that the kernel places it on a
/// huge page boundary and no partial page at either end falls back to 4 KiB pages.
const HUGE_PAGE_BYTES: usize = 2 << 20;

// What `as_mut` relies on: a block is exactly its 1 KiB of words, and a page-aligned
// mapping is aligned enough for it.
const _: () = assert!(std::mem::size_of::<Block>() == Block::SIZE);
const _: () = assert!(std::mem::align_of::<Block>() <= 4096);

/// `count` zeroed Argon2 blocks in a mapping advised for transparent huge pages, unmapped
/// on drop. Reuse one for consecutive hashes where they come in bursts: a fresh mapping
/// costs the kernel's zeroing of its pages on first touch (about 1 ms per 19 MiB here).
pub struct Blocks {
    map: MmapMut,
    count: usize,
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocks")
            .field("count", &self.count)
            .field("mapped_bytes", &self.map.len())
            .finish()
    }
}

impl Blocks {
    /// Maps `count` blocks (at least one).
    pub fn new(count: usize) -> io::Result<Self> {
        let bytes = count
            .checked_mul(Block::SIZE)
            .filter(|&b| b > 0)
            .and_then(|b| b.checked_next_multiple_of(HUGE_PAGE_BYTES))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot map {count} Argon2 blocks"),
                )
            })?;
        let map = MmapMut::map_anon(bytes)?;
        // Advice only: where huge pages are off (THP `never`, a kernel without them) the
        // hash is the same, only slower, so a refusal is not an error.
        let _ = map.advise(Advice::HugePage);
        Ok(Self { map, count })
    }

    /// How many blocks this holds.
    pub fn count(&self) -> usize {
        self.count
    }
}

impl AsMut<[Block]> for Blocks {
    fn as_mut(&mut self) -> &mut [Block] {
        let bytes: &mut [u8] = &mut self.map;
        #[allow(unsafe_code)]
        // SAFETY: the mapping is page-aligned (at least `align_of::<Block>()`, asserted
        // above) and at least `count * size_of::<Block>()` bytes long (`new`); a `Block` is
        // 128 `u64`s, for which every bit pattern is valid, so any contents of the mapping
        // are valid blocks; and the slice borrows `self` mutably, so nothing else reads or
        // writes the mapping while it lives, and it cannot outlive the mapping.
        unsafe {
            std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<Block>(), self.count)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests
mod tests {
    use super::*;
    use argon2::{Algorithm, Argon2, Params, Version};
    use portcullis_testkit::smaps::{self, Mapping};

    /// OWASP's parameters, as the backend uses them.
    fn owasp() -> Argon2<'static> {
        Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(19 * 1024, 2, 1, None).unwrap(),
        )
    }

    /// The mapping of this process that holds `addr`, if any.
    fn mapping_at(addr: usize) -> Option<Mapping> {
        smaps::mappings("self")
            .into_iter()
            .find(|m| m.contains(addr))
    }

    #[test]
    fn hashes_exactly_as_the_heap_memory_does() {
        let argon = owasp();
        let (password, salt) = (b"correct horse battery staple", b"sixteen-byte-salt");
        let mut from_heap = [0u8; 32];
        argon
            .hash_password_into(password, salt, &mut from_heap)
            .unwrap();
        let mut blocks = Blocks::new(argon.params().block_count()).unwrap();
        let mut from_mapping = [0u8; 32];
        argon
            .hash_password_into_with_memory(password, salt, &mut from_mapping, &mut blocks)
            .unwrap();
        assert_eq!(from_heap, from_mapping);
        // A second hash over the same (now dirty) memory gives the same answer.
        let mut again = [0u8; 32];
        argon
            .hash_password_into_with_memory(password, salt, &mut again, &mut blocks)
            .unwrap();
        assert_eq!(from_heap, again);
    }

    #[test]
    fn the_blocks_start_zeroed_and_span_the_whole_count() {
        let mut blocks = Blocks::new(19 * 1024).unwrap();
        assert_eq!(blocks.count(), 19 * 1024);
        let slice = blocks.as_mut();
        assert_eq!(slice.len(), 19 * 1024);
        assert!(
            slice
                .iter()
                .all(|b| AsRef::<[u64]>::as_ref(b).iter().all(|&w| w == 0))
        );
        AsMut::<[u64]>::as_mut(&mut slice[19 * 1024 - 1])[127] = 7;
        assert_eq!(
            AsRef::<[u64]>::as_ref(&blocks.as_mut()[19 * 1024 - 1])[127],
            7
        );
    }

    #[test]
    fn the_mapping_asks_for_huge_pages_and_leaves_when_dropped() {
        let mut blocks = Blocks::new(19 * 1024).unwrap();
        let addr = blocks.as_mut().as_ptr() as usize;
        let mapping = mapping_at(addr).expect("the blocks are a mapping of their own");
        assert!(mapping.huge_page_advised(), "{mapping:?}");
        assert_eq!(
            mapping.size_kib * 1024 % HUGE_PAGE_BYTES as u64,
            0,
            "{mapping:?}"
        );
        assert!(mapping.size_kib >= 19 * 1024, "{mapping:?}");
        drop(blocks);
        assert!(
            mapping_at(addr).is_none(),
            "the mapping outlived its blocks"
        );
    }

    #[test]
    fn no_blocks_or_too_many_is_a_clear_error() {
        for count in [0, usize::MAX / 512] {
            let err = Blocks::new(count).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("Argon2 blocks"), "{err}");
        }
    }
}
