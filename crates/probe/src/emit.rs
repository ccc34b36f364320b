//! `netcheck --emit-env`: the environment a start script should `eval` on this node,
//! derived from the facts and the checks that passed. Nothing at all when a check failed,
//! so a script cannot start on a half-checked node.

use crate::checks::{Check, Status};
use crate::facts::Facts;

/// The variables to export, in order; or the ids of the failing checks.
pub fn environment(
    facts: &Facts,
    checks: &[Check],
) -> Result<Vec<(&'static str, String)>, Vec<&'static str>> {
    let failed: Vec<&'static str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.id)
        .collect();
    if !failed.is_empty() {
        return Err(failed);
    }
    let iface = &facts.iface;
    let Some(address) = iface.global_ipv4().filter(|_| iface.kind != "loopback") else {
        return Err(vec!["iface.up"]);
    };
    let mut vars = vec![
        // `=` makes NCCL match the name exactly (eth1 would otherwise also match eth10).
        ("NCCL_SOCKET_IFNAME", format!("={}", iface.name)),
        ("GLOO_SOCKET_IFNAME", iface.name.clone()),
        ("VLLM_HOST_IP", address.to_string()),
    ];
    // RoCE: the RoCE v2 GID bound to this interface, as the rdma.ports check found it.
    let gid = checks
        .iter()
        .filter(|c| c.id == "rdma.ports" && c.status == Status::Pass)
        .find_map(|c| c.fix.strip_prefix("export NCCL_IB_GID_INDEX="))
        .map(str::to_string);
    if let Some(gid) = gid {
        vars.push(("NCCL_IB_GID_INDEX", gid));
    }
    Ok(vars)
}

/// `export NAME='value'` lines, quoted for a POSIX shell.
pub fn export_lines(vars: &[(&'static str, String)]) -> String {
    vars.iter()
        .map(|(name, value)| format!("export {name}='{}'\n", value.replace('\'', r"'\''")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture;

    #[test]
    fn a_passing_node_gets_its_interface_and_address() {
        let facts = fixture::facts();
        let checks = vec![];
        let vars = environment(&facts, &checks).unwrap();
        let text = export_lines(&vars);
        assert_eq!(
            text,
            "export NCCL_SOCKET_IFNAME='=eth0'\nexport GLOO_SOCKET_IFNAME='eth0'\nexport VLLM_HOST_IP='10.0.0.5'\n"
        );
    }

    #[test]
    fn any_failure_emits_nothing_and_roce_adds_the_gid() {
        let facts = fixture::facts();
        let failing = Check::new(
            "ports.free",
            Status::Fail,
            "6379 in use",
            serde_json::json!({}),
        );
        assert_eq!(environment(&facts, &[failing]), Err(vec!["ports.free"]));
        let roce = Check::new("rdma.ports", Status::Pass, "ok", serde_json::json!({}))
            .fix("export NCCL_IB_GID_INDEX=3");
        let vars = environment(&facts, &[roce]).unwrap();
        assert_eq!(
            vars.last().unwrap(),
            &("NCCL_IB_GID_INDEX", "3".to_string())
        );
    }
}
