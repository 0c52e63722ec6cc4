//! The simulated resync: which frame a running resync shows, and DRBD 8.4's progress lines.
//!
//! Timing of a real resync is the kernel's business; the sim replays the shape of a real
//! one. [`PROFILE`] holds the frames measured on real DRBD 8.4.11 for a 262100 KiB device
//! (/work/shared/fixtures/drbd-8.4.11-real/transcript.txt, the seven `cat /proc/drbd`
//! after `primary --force`); other sizes are scaled. The bar, the percentage layout, the
//! finish estimate and the speeds are computed with the formulas of the kernel's
//! `drbd_proc.c` (`drbd_syncer_progress`) from those numbers.

/// Step (invocations or `DRBD_SIM_STEP_MS` periods since the resync was decided) at which
/// the first progress frame shows; before it the link shows Connected/Established with the
/// whole device out of sync, as the capture's first read after `primary --force` does.
pub const FIRST_FRAME_STEP: u64 = 2;
/// Step at which the resync has finished.
pub const RESYNC_DONE_STEP: u64 = FIRST_FRAME_STEP + PROFILE.len() as u64;

/// Device size the profile was measured on (KiB).
const PROFILE_TOTAL_KB: u64 = 262_100;

/// One measured frame: KiB left, source's ns and dr, pe, ua, the kernel's per-mille done
/// (it counts in-flight requests, so it runs ahead of `left`), seconds since start.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub left: u64,
    pub ns: u64,
    pub dr: u64,
    pub pe: u64,
    pub ua: u64,
    pub per_mil: u64,
    pub elapsed_s: u64,
}

const fn f(left: u64, ns: u64, dr: u64, pe: u64, ua: u64, per_mil: u64, elapsed_s: u64) -> Frame {
    Frame {
        left,
        ns,
        dr,
        pe,
        ua,
        per_mil,
        elapsed_s,
    }
}

/// From the 8.4.11 capture (see module docs).
pub const PROFILE: [Frame; 6] = [
    f(232_404, 30_572, 32_768, 1, 3, 125, 1),
    f(188_372, 73_728, 73_728, 0, 0, 297, 1),
    f(149_460, 114_688, 114_688, 2, 0, 438, 3),
    f(106_452, 155_648, 155_648, 0, 0, 610, 4),
    f(65_492, 196_608, 196_608, 0, 0, 766, 5),
    f(24_532, 237_568, 237_568, 0, 0, 922, 6),
];

/// The frame shown at `step` for a device of `total_kb`, or None when the resync has not
/// produced progress yet (step < FIRST_FRAME_STEP). Callers handle completion.
pub fn frame(step: u64, total_kb: u64) -> Option<Frame> {
    if step < FIRST_FRAME_STEP {
        return None;
    }
    let i = ((step - FIRST_FRAME_STEP) as usize).min(PROFILE.len() - 1);
    let p = PROFILE[i];
    let scale = |v: u64| v * total_kb / PROFILE_TOTAL_KB;
    Some(Frame {
        left: scale(p.left),
        ns: scale(p.ns),
        dr: scale(p.dr),
        ..p
    })
}

/// drbd_proc.c `seq_printf_with_thousands_grouping`.
pub fn thousands(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{},{:03},{:03}", v / 1_000_000, (v / 1000) % 1000, v % 1000)
    } else if v >= 1000 {
        format!("{},{:03}", v / 1000, v % 1000)
    } else {
        v.to_string()
    }
}

/// The two progress lines /proc/drbd prints under a SyncSource/SyncTarget minor
/// (drbd_proc.c `drbd_syncer_progress`; bitmap bits are 4 KiB).
pub fn proc_lines(fr: &Frame, total_kb: u64, target: bool) -> String {
    let res = fr.per_mil;
    let x = res / 50;
    let y = 20 - x;
    let mut s = String::from("\t[");
    for _ in 1..x {
        s.push('=');
    }
    s.push('>');
    for _ in 0..y {
        s.push('.');
    }
    s.push_str("] ");
    s.push_str(&format!("sync'ed:{:>3}.{}% ", res / 10, res % 10));
    let (left_bits, total_bits) = (fr.left / 4, total_kb / 4);
    if total_bits > (4 << 18) {
        s.push_str(&format!(
            "({}/{})M",
            (left_bits >> 10) * 4,
            (total_bits >> 10) * 4
        ));
    } else {
        s.push_str(&format!("({}/{})K", left_bits * 4, total_bits * 4));
    }
    s.push_str("\n\t");
    let dt = fr.elapsed_s.max(1);
    let db = total_bits.saturating_sub(left_bits);
    let rt = (dt * (left_bits / (db / 100 + 1))) / 100;
    s.push_str(&format!(
        "finish: {}:{:02}:{:02}",
        rt / 3600,
        (rt % 3600) / 60,
        rt % 60
    ));
    let dbdt = (db / dt) * 4;
    s.push_str(&format!(
        " speed: {} ({})",
        thousands(dbdt),
        thousands(dbdt)
    ));
    if target {
        // The target also prints the controller's wanted rate; 250 is 8.4's default
        // resync-rate (drbd.conf(5)), not measured.
        s.push_str(" want: 250");
    }
    s.push_str(" K/sec\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reproduce_the_capture() {
        let fr = frame(FIRST_FRAME_STEP, PROFILE_TOTAL_KB).unwrap();
        assert_eq!(
            proc_lines(&fr, PROFILE_TOTAL_KB, false),
            "\t[=>..................] sync'ed: 12.5% (232404/262100)K\n\tfinish: 0:00:07 speed: 29,696 (29,696) K/sec\n"
        );
        let fr = frame(FIRST_FRAME_STEP + 2, PROFILE_TOTAL_KB).unwrap();
        assert_eq!(
            proc_lines(&fr, PROFILE_TOTAL_KB, false),
            "\t[=======>............] sync'ed: 43.8% (149460/262100)K\n\tfinish: 0:00:03 speed: 37,544 (37,544) K/sec\n"
        );
        assert!(frame(FIRST_FRAME_STEP - 1, PROFILE_TOTAL_KB).is_none());
    }

    #[test]
    fn frames_scale_with_size() {
        let fr = frame(FIRST_FRAME_STEP, PROFILE_TOTAL_KB * 2).unwrap();
        assert_eq!(fr.left, 232_404 * 2);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
