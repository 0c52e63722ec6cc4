//! Small steps many end-to-end tests share.

use serde_json::Value;

use crate::lab::Node;

/// The entry of `name` in `ctmgr --json list` inside the node; panics when it is not listed.
#[track_caller]
pub fn listed(n: &Node, name: &str) -> Value {
    let out = n.ctmgr(&["--json", "list"]);
    out.assert_success();
    out.json()["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no containers array: {out}"))
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not listed: {out}"))
}
