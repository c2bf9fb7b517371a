//! A process's memory mappings as `/proc/<pid>/smaps` lists them, for tests that check
//! how a process holds its memory (which mappings exist, their size, their advice).

/// One mapping: its address range, its size and its `VmFlags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub size_kib: u64,
    pub flags: Vec<String>,
}

impl Mapping {
    /// Whether `addr` lies in this mapping.
    pub fn contains(&self, addr: usize) -> bool {
        (self.start..self.end).contains(&addr)
    }

    /// Advised for transparent huge pages (`madvise(MADV_HUGEPAGE)`: `hg` in `VmFlags`).
    pub fn huge_page_advised(&self) -> bool {
        self.flags.iter().any(|f| f == "hg")
    }
}

/// Every mapping of process `pid` (`"self"` for the calling process).
pub fn mappings(pid: &str) -> Vec<Mapping> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/smaps: {e}"));
    let mut found: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        // A mapping's header starts with its address range; its fields with `Name:`.
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let parse = |hex| {
                usize::from_str_radix(hex, 16)
                    .unwrap_or_else(|e| panic!("smaps address {hex:?}: {e}"))
            };
            found.push(Mapping {
                start: parse(start),
                end: parse(end),
                size_kib: 0,
                flags: Vec::new(),
            });
        } else if let Some(current) = found.last_mut() {
            if let Some(kib) = line.strip_prefix("Size:") {
                let kib = kib.trim().trim_end_matches("kB").trim();
                current.size_kib = kib
                    .parse()
                    .unwrap_or_else(|e| panic!("smaps `Size:` of {kib:?}: {e}"));
            } else if let Some(flags) = line.strip_prefix("VmFlags:") {
                current.flags = flags.split_whitespace().map(str::to_owned).collect();
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_its_stack_among_its_mappings() {
        let local = 0u8;
        let addr = std::ptr::from_ref(&local) as usize;
        let all = mappings("self");
        let stack = all.iter().find(|m| m.contains(addr)).expect("the stack");
        assert!(stack.size_kib > 0, "{stack:?}");
        assert!(stack.flags.iter().any(|f| f == "rd"), "{stack:?}");
    }
}
