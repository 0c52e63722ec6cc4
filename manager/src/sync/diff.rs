//! A small unified-style line diff, to show the operator how a replica
//! drifted. Pure; lines are compared as bytes (a non-UTF-8 config still
//! diffs, its bytes shown replaced).

/// Largest number of lines on either side that is diffed line by line; the
/// table of the longest common subsequence grows with the product.
pub const MAX_LINES: usize = 2000;
/// Unchanged lines shown around each change.
pub const CONTEXT: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Del,
    Add,
}

/// The diff from `old` to `new` with `---`/`+++` labels and `@@` hunks.
/// Empty when the two are equal.
pub fn unified(old: &[u8], new: &[u8], old_label: &str, new_label: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&[u8]> = lines(old);
    let b: Vec<&[u8]> = lines(new);
    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    if a.len() > MAX_LINES || b.len() > MAX_LINES {
        out.push_str(&format!(
            "(too long to diff: {} and {} lines)\n",
            a.len(),
            b.len()
        ));
        return out;
    }
    let script = edit_script(&a, &b);
    // Positions (in a and b) at each script step, for hunk headers.
    let mut pos = Vec::with_capacity(script.len() + 1);
    let (mut i, mut j) = (0usize, 0usize);
    for op in &script {
        pos.push((i, j));
        match op {
            Op::Same => {
                i += 1;
                j += 1;
            }
            Op::Del => i += 1,
            Op::Add => j += 1,
        }
    }
    pos.push((i, j));
    let changed: Vec<usize> = (0..script.len())
        .filter(|&k| script[k] != Op::Same)
        .collect();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = changed[k] + 1;
        // Merge changes whose contexts touch.
        while k + 1 < changed.len() && changed[k + 1] <= end + 2 * CONTEXT {
            k += 1;
            end = changed[k] + 1;
        }
        let end = (end + CONTEXT).min(script.len());
        let (a0, b0) = pos[start];
        let (a1, b1) = pos[end];
        out.push_str(&format!(
            "@@ -{},{} +{},{} @@\n",
            a0 + 1,
            a1 - a0,
            b0 + 1,
            b1 - b0
        ));
        for s in start..end {
            let (ai, bj) = pos[s];
            let (mark, line) = match script[s] {
                Op::Same => (' ', a[ai]),
                Op::Del => ('-', a[ai]),
                Op::Add => ('+', b[bj]),
            };
            out.push(mark);
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        k += 1;
    }
    let ends_nl = |t: &[u8]| t.is_empty() || t.ends_with(b"\n");
    if ends_nl(old) != ends_nl(new) {
        out.push_str("\\ the files differ in their final newline\n");
    }
    out
}

fn lines(text: &[u8]) -> Vec<&[u8]> {
    if text.is_empty() {
        return Vec::new();
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    body.split(|&c| c == b'\n').collect()
}

/// Longest-common-subsequence edit script from `a` to `b`.
fn edit_script(a: &[&[u8]], b: &[&[u8]]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let w = m + 1;
    let mut lcs = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    let mut ops = Vec::with_capacity(n + m);
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if a[i] == b[j] {
            ops.push(Op::Same);
            i += 1;
            j += 1;
        } else if lcs[(i + 1) * w + j] >= lcs[i * w + j + 1] {
            ops.push(Op::Del);
            i += 1;
        } else {
            ops.push(Op::Add);
            j += 1;
        }
    }
    ops.extend(std::iter::repeat_n(Op::Del, n - i));
    ops.extend(std::iter::repeat_n(Op::Add, m - j));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_files_have_no_diff() {
        assert_eq!(unified(b"a\nb\n", b"a\nb\n", "x", "y"), "");
    }

    #[test]
    fn one_changed_line_with_context() {
        let old = b"l1\nl2\nl3\nlxc.net.0.link = br0\nl5\nl6\nl7\n";
        let new = b"l1\nl2\nl3\nlxc.net.0.link = br1\nl5\nl6\nl7\n";
        let d = unified(old, new, "last pushed", "peer");
        assert_eq!(
            d,
            "--- last pushed\n+++ peer\n@@ -2,5 +2,5 @@\n l2\n l3\n-lxc.net.0.link = br0\n+lxc.net.0.link = br1\n l5\n l6\n"
        );
    }

    #[test]
    fn far_apart_changes_make_two_hunks_and_additions_count() {
        let old: Vec<u8> = (1..=20)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .into_bytes();
        let mut new_lines: Vec<String> = (1..=20).map(|i| format!("{i}\n")).collect();
        new_lines[1] = "two\n".into();
        new_lines.push("21\n".into());
        let new = new_lines.concat().into_bytes();
        let d = unified(&old, &new, "a", "b");
        assert_eq!(d.matches("@@ ").count(), 2, "{d}");
        assert!(d.contains("-2\n+two\n"), "{d}");
        assert!(d.contains("@@ -19,2 +19,3 @@\n 19\n 20\n+21\n"), "{d}");
    }

    #[test]
    fn empty_side_and_non_utf8() {
        let d = unified(b"", b"caf\xe9\n", "a", "b");
        assert!(d.contains("@@ -1,0 +1,1 @@\n+caf\u{fffd}\n"), "{d}");
        let d = unified(b"x", b"x\n", "a", "b");
        assert!(d.contains("final newline"), "{d}");
    }
}
