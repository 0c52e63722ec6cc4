//! What the sim reads from the node it runs in: backing disk sizes and whether a device is
//! held open (mounted in this mount namespace). Read-only; never changes the host.

use std::fs;
use std::path::Path;

/// Disk size assumed when the backing disk cannot be measured (the tests use fake paths):
/// 256 MiB, the size of the 8.4 capture's disk.
pub const DEFAULT_DISK_KB: u64 = 262_144;

/// Size in KiB of a block device, via /sys/class/block/NAME/size (512-byte sectors).
pub fn block_size_kb(disk: &str) -> Option<u64> {
    let real = fs::canonicalize(disk).ok()?;
    let name = real.file_name()?.to_str()?;
    let sectors: u64 = fs::read_to_string(Path::new("/sys/class/block").join(name).join("size"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (sectors > 0).then_some(sectors / 2)
}

/// Internal meta data of a single-peer device: 4 KiB superblock, 32 KiB activity log and
/// one bit per 4 KiB rounded up to 4 KiB (drbdmeta's layout for `meta-disk internal`).
pub fn bitmap_kb(disk_kb: u64) -> u64 {
    let bits = disk_kb.div_ceil(4);
    let bytes = bits.div_ceil(8);
    bytes.div_ceil(4096) * 4
}

/// Usable DRBD device size: the disk minus internal meta data.
pub fn usable_kb(disk_kb: u64) -> u64 {
    disk_kb.saturating_sub(36 + bitmap_kb(disk_kb))
}

/// drbd-utils `ppsize()` (shared_tool.c): "8 KB", "16 MB"...
pub fn ppsize(mut size: u64) -> String {
    const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    let mut base = 0;
    while size >= 10000 && base < UNITS.len() - 1 {
        size = (size >> 10) + u64::from(size & (1 << 9) != 0);
        base += 1;
    }
    format!("{size} {}B", UNITS[base])
}

/// Mount sources listed in a mountinfo text (field after the fs type, behind " - ").
pub fn mount_sources(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split_once(" - "))
        .filter_map(|(_, rest)| rest.split_whitespace().nth(1))
        .map(str::to_string)
        .collect()
}

/// True when `device` or `disk` is a mount source in this process's mount namespace, or is
/// named in `extra` (the test-only DRBD_SIM_HOLD_OPEN list).
pub fn held_open(device: &str, disk: &str, extra: &[String]) -> bool {
    let same = |a: &str, b: &str| {
        a == b
            || match (fs::canonicalize(a), fs::canonicalize(b)) {
                (Ok(x), Ok(y)) => x == y,
                _ => false,
            }
    };
    if extra.iter().any(|e| same(e, device) || same(e, disk)) {
        return true;
    }
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_sources(&info)
        .iter()
        .any(|src| src.starts_with('/') && (same(src, device) || same(src, disk)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_capture() {
        // 256 MiB disk: "initializing bitmap (8 KB)" and oos:262100 in the 8.4 capture.
        assert_eq!(bitmap_kb(262_144), 8);
        assert_eq!(usable_kb(262_144), 262_100);
        assert_eq!(ppsize(8), "8 KB");
        assert_eq!(ppsize(32 * 1024), "32 MB");
    }

    #[test]
    fn mountinfo_sources() {
        let mi = "36 35 98:0 / /mnt rw,noatime master:1 - btrfs /dev/drbd0 rw\n\
                  37 35 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(mount_sources(mi), vec!["/dev/drbd0", "proc"]);
        assert!(held_open("/dev/drbd9", "/dev/x", &["/dev/drbd9".into()]));
        assert!(!held_open("/dev/drbd-sim-none", "/dev/loop-none", &[]));
    }
}
