//! Parses /proc/self/mountinfo (proc(5)) into typed mounts. Pure: the caller
//! passes the text, so tests use literal lines.

use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `major:minor` of st_dev (for Btrfs an anonymous device, not the block device).
    pub dev: String,
    /// Root of the mount within the filesystem (`/` or a subvolume path).
    pub root: PathBuf,
    pub mountpoint: PathBuf,
    pub options: String,
    pub fstype: String,
    /// The mount source: `/dev/drbd0`, `/dev/loop3`, `tmpfs`…
    pub source: String,
    pub super_options: String,
}

#[derive(Debug, thiserror::Error)]
#[error("mountinfo line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &field[i + 1..(i + 4).min(field.len())];
            if oct.len() == 3 && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                if let Ok(v) = u8::from_str_radix(oct, 8) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the whole text of a mountinfo file.
pub fn parse(text: &str) -> Result<Vec<Mount>, ParseError> {
    let mut mounts = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: &str| ParseError {
            line: idx + 1,
            reason: reason.to_string(),
        };
        let (left, right) = line
            .split_once(" - ")
            .ok_or_else(|| err("no ' - ' separator"))?;
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            return Err(err("too few fields"));
        }
        mounts.push(Mount {
            mount_id: l[0].parse().map_err(|_| err("bad mount id"))?,
            parent_id: l[1].parse().map_err(|_| err("bad parent id"))?,
            dev: l[2].to_string(),
            root: PathBuf::from(unescape(l[3])),
            mountpoint: PathBuf::from(unescape(l[4])),
            options: l[5].to_string(),
            fstype: r[0].to_string(),
            source: unescape(r[1]),
            super_options: r[2..].join(" "),
        });
    }
    Ok(mounts)
}

/// Reads and parses this process's mount table.
pub fn read() -> std::io::Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    parse(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The mount visible at `mountpoint` (the last one stacked there wins, as the
/// kernel shows it to path lookups).
pub fn at<'a>(mounts: &'a [Mount], mountpoint: &Path) -> Option<&'a Mount> {
    mounts.iter().rev().find(|m| m.mountpoint == mountpoint)
}

/// Every mount at or below `dir` (for "is anything still mounted in there").
pub fn under<'a>(mounts: &'a [Mount], dir: &'a Path) -> impl Iterator<Item = &'a Mount> + 'a {
    mounts.iter().filter(move |m| m.mountpoint.starts_with(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as printed by Linux 6.1 (Debian 12) for a Btrfs on a loop device,
    // a DRBD device, and a path with a space.
    const SAMPLE: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
301 22 0:52 / /srv/store1 rw,noatime shared:170 - btrfs /dev/loop3 rw,ssd,space_cache=v2,subvolid=5,subvol=/
302 22 0:53 / /srv/store\\0402 rw,noatime - btrfs /dev/drbd1 rw,subvolid=5,subvol=/
";

    #[test]
    fn parses_btrfs_and_escaped_mountpoints() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mountpoint, PathBuf::from("/srv/store1"));
        assert_eq!(m[1].fstype, "btrfs");
        assert_eq!(m[1].source, "/dev/loop3");
        assert_eq!(m[1].options, "rw,noatime");
        assert_eq!(m[2].mountpoint, PathBuf::from("/srv/store 2"));
        assert_eq!(at(&m, Path::new("/srv/store1")).unwrap().mount_id, 301);
        assert!(at(&m, Path::new("/srv")).is_none());
        assert_eq!(under(&m, Path::new("/srv")).count(), 2);
    }

    #[test]
    fn rejects_garbage_with_line_number() {
        let err = parse("22 1 254:1 / / rw\nnonsense\n").unwrap_err();
        assert_eq!(err.line, 1);
        let err = parse("1 2 3 4 5 6 - ext4 /dev/x rw\nnonsense\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn reads_the_real_table() {
        let mounts = read().unwrap();
        assert!(mounts.iter().any(|m| m.mountpoint == Path::new("/")));
    }
}
