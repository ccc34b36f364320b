//! Proves [`super::abi`] matches `<infiniband/verbs.h>`: compiles a small C program with
//! `cc` at test time (never in a build script) that prints `sizeof` and `offsetof` for every
//! field we define, and compares them with Rust's. Skips when the header is missing, unless
//! `NODELINK_REQUIRE_VERBS_HEADER=1` (set by `.ci/run`), which makes that a failure.

use super::abi::*;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

/// (C type, C member designator, Rust offset); a member of "" is the type's size.
macro_rules! layout {
    ($( $cty:literal $rty:ty { $( $cfield:literal => $($rfield:ident).+ ),* $(,)? } )*) => {
        vec![ $(
            ($cty, "", size_of::<$rty>()),
            $( ($cty, $cfield, offset_of!($rty, $($rfield).+)), )*
        )* ]
    };
}

fn table() -> Vec<(&'static str, &'static str, usize)> {
    layout! {
        "struct ibv_device_attr" ibv_device_attr {
            "fw_ver" => fw_ver, "node_guid" => node_guid, "sys_image_guid" => sys_image_guid,
            "max_mr_size" => max_mr_size, "page_size_cap" => page_size_cap,
            "vendor_id" => vendor_id, "vendor_part_id" => vendor_part_id, "hw_ver" => hw_ver,
            "max_qp" => max_qp, "max_qp_wr" => max_qp_wr, "device_cap_flags" => device_cap_flags,
            "max_sge" => max_sge, "max_sge_rd" => max_sge_rd, "max_cq" => max_cq,
            "max_cqe" => max_cqe, "max_mr" => max_mr, "max_pd" => max_pd,
            "max_qp_rd_atom" => max_qp_rd_atom, "max_ee_rd_atom" => max_ee_rd_atom,
            "max_res_rd_atom" => max_res_rd_atom, "max_qp_init_rd_atom" => max_qp_init_rd_atom,
            "max_ee_init_rd_atom" => max_ee_init_rd_atom, "atomic_cap" => atomic_cap,
            "max_ee" => max_ee, "max_rdd" => max_rdd, "max_mw" => max_mw,
            "max_raw_ipv6_qp" => max_raw_ipv6_qp, "max_raw_ethy_qp" => max_raw_ethy_qp,
            "max_mcast_grp" => max_mcast_grp, "max_mcast_qp_attach" => max_mcast_qp_attach,
            "max_total_mcast_qp_attach" => max_total_mcast_qp_attach, "max_ah" => max_ah,
            "max_fmr" => max_fmr, "max_map_per_fmr" => max_map_per_fmr, "max_srq" => max_srq,
            "max_srq_wr" => max_srq_wr, "max_srq_sge" => max_srq_sge, "max_pkeys" => max_pkeys,
            "local_ca_ack_delay" => local_ca_ack_delay, "phys_port_cnt" => phys_port_cnt,
        }
        "struct ibv_port_attr" ibv_port_attr {
            "state" => state, "max_mtu" => max_mtu, "active_mtu" => active_mtu,
            "gid_tbl_len" => gid_tbl_len, "port_cap_flags" => port_cap_flags,
            "max_msg_sz" => max_msg_sz, "bad_pkey_cntr" => bad_pkey_cntr,
            "qkey_viol_cntr" => qkey_viol_cntr, "pkey_tbl_len" => pkey_tbl_len, "lid" => lid,
            "sm_lid" => sm_lid, "lmc" => lmc, "max_vl_num" => max_vl_num, "sm_sl" => sm_sl,
            "subnet_timeout" => subnet_timeout, "init_type_reply" => init_type_reply,
            "active_width" => active_width, "active_speed" => active_speed,
            "phys_state" => phys_state, "link_layer" => link_layer, "flags" => flags,
            "port_cap_flags2" => port_cap_flags2,
        }
        "union ibv_gid" ibv_gid { "raw" => raw }
        "struct ibv_gid_entry" ibv_gid_entry {
            "gid" => gid, "gid_index" => gid_index, "port_num" => port_num,
            "gid_type" => gid_type, "ndev_ifindex" => ndev_ifindex,
        }
        "struct ibv_context_ops" ibv_context_ops {
            "alloc_mw" => alloc_mw, "poll_cq" => poll_cq, "req_notify_cq" => req_notify_cq,
            "post_srq_recv" => post_srq_recv, "post_send" => post_send,
            "post_recv" => post_recv, "_compat_async_event" => _compat_async_event,
        }
        "struct ibv_context" ibv_context {
            "device" => device, "ops" => ops, "cmd_fd" => cmd_fd, "async_fd" => async_fd,
            "num_comp_vectors" => num_comp_vectors, "mutex" => mutex, "abi_compat" => abi_compat,
        }
        "struct ibv_pd" ibv_pd { "context" => context, "handle" => handle }
        "struct ibv_mr" ibv_mr {
            "context" => context, "pd" => pd, "addr" => addr, "length" => length,
            "handle" => handle, "lkey" => lkey, "rkey" => rkey,
        }
        "struct ibv_cq" ibv_cq {
            "context" => context, "channel" => channel, "cq_context" => cq_context,
            "handle" => handle, "cqe" => cqe, "mutex" => mutex, "cond" => cond,
            "comp_events_completed" => comp_events_completed,
            "async_events_completed" => async_events_completed,
        }
        "struct ibv_qp" ibv_qp {
            "context" => context, "qp_context" => qp_context, "pd" => pd,
            "send_cq" => send_cq, "recv_cq" => recv_cq, "srq" => srq, "handle" => handle,
            "qp_num" => qp_num, "state" => state, "qp_type" => qp_type, "mutex" => mutex,
            "cond" => cond, "events_completed" => events_completed,
        }
        "struct ibv_qp_cap" ibv_qp_cap {
            "max_send_wr" => max_send_wr, "max_recv_wr" => max_recv_wr,
            "max_send_sge" => max_send_sge, "max_recv_sge" => max_recv_sge,
            "max_inline_data" => max_inline_data,
        }
        "struct ibv_qp_init_attr" ibv_qp_init_attr {
            "qp_context" => qp_context, "send_cq" => send_cq, "recv_cq" => recv_cq,
            "srq" => srq, "cap" => cap, "qp_type" => qp_type, "sq_sig_all" => sq_sig_all,
        }
        "struct ibv_global_route" ibv_global_route {
            "dgid" => dgid, "flow_label" => flow_label, "sgid_index" => sgid_index,
            "hop_limit" => hop_limit, "traffic_class" => traffic_class,
        }
        "struct ibv_ah_attr" ibv_ah_attr {
            "grh" => grh, "dlid" => dlid, "sl" => sl, "src_path_bits" => src_path_bits,
            "static_rate" => static_rate, "is_global" => is_global, "port_num" => port_num,
        }
        "struct ibv_qp_attr" ibv_qp_attr {
            "qp_state" => qp_state, "cur_qp_state" => cur_qp_state, "path_mtu" => path_mtu,
            "path_mig_state" => path_mig_state, "qkey" => qkey, "rq_psn" => rq_psn,
            "sq_psn" => sq_psn, "dest_qp_num" => dest_qp_num,
            "qp_access_flags" => qp_access_flags, "cap" => cap, "ah_attr" => ah_attr,
            "alt_ah_attr" => alt_ah_attr, "pkey_index" => pkey_index,
            "alt_pkey_index" => alt_pkey_index, "en_sqd_async_notify" => en_sqd_async_notify,
            "sq_draining" => sq_draining, "max_rd_atomic" => max_rd_atomic,
            "max_dest_rd_atomic" => max_dest_rd_atomic, "min_rnr_timer" => min_rnr_timer,
            "port_num" => port_num, "timeout" => timeout, "retry_cnt" => retry_cnt,
            "rnr_retry" => rnr_retry, "alt_port_num" => alt_port_num,
            "alt_timeout" => alt_timeout, "rate_limit" => rate_limit,
        }
        "struct ibv_sge" ibv_sge { "addr" => addr, "length" => length, "lkey" => lkey }
        "struct ibv_send_wr" ibv_send_wr {
            "wr_id" => wr_id, "next" => next, "sg_list" => sg_list, "num_sge" => num_sge,
            "opcode" => opcode, "send_flags" => send_flags, "imm_data" => imm_data,
            "wr" => wr, "wr.rdma.remote_addr" => wr.rdma.remote_addr,
            "wr.rdma.rkey" => wr.rdma.rkey, "wr.atomic.rkey" => wr.atomic.rkey,
            "qp_type" => qp_type, "bind_mw" => bind_mw,
        }
        "struct ibv_recv_wr" ibv_recv_wr {
            "wr_id" => wr_id, "next" => next, "sg_list" => sg_list, "num_sge" => num_sge,
        }
        "struct ibv_wc" ibv_wc {
            "wr_id" => wr_id, "status" => status, "opcode" => opcode,
            "vendor_err" => vendor_err, "byte_len" => byte_len, "imm_data" => imm_data,
            "qp_num" => qp_num, "src_qp" => src_qp, "wc_flags" => wc_flags,
            "pkey_index" => pkey_index, "slid" => slid, "sl" => sl,
            "dlid_path_bits" => dlid_path_bits,
        }
    }
}

/// (C expression, Rust value) for each constant we copied.
fn constants() -> Vec<(&'static str, i64)> {
    macro_rules! consts {
        ($($name:ident),* $(,)?) => { vec![$((stringify!($name), $name as i64)),*] };
    }
    consts![
        IBV_PORT_ACTIVE,
        IBV_LINK_LAYER_UNSPECIFIED,
        IBV_LINK_LAYER_INFINIBAND,
        IBV_LINK_LAYER_ETHERNET,
        IBV_GID_TYPE_IB,
        IBV_GID_TYPE_ROCE_V1,
        IBV_GID_TYPE_ROCE_V2,
        IBV_ACCESS_LOCAL_WRITE,
        IBV_ACCESS_REMOTE_WRITE,
        IBV_ACCESS_REMOTE_READ,
        IBV_QPT_RC,
        IBV_QPS_INIT,
        IBV_QPS_RTR,
        IBV_QPS_RTS,
        IBV_QP_STATE,
        IBV_QP_ACCESS_FLAGS,
        IBV_QP_PKEY_INDEX,
        IBV_QP_PORT,
        IBV_QP_AV,
        IBV_QP_PATH_MTU,
        IBV_QP_TIMEOUT,
        IBV_QP_RETRY_CNT,
        IBV_QP_RNR_RETRY,
        IBV_QP_RQ_PSN,
        IBV_QP_MAX_QP_RD_ATOMIC,
        IBV_QP_MIN_RNR_TIMER,
        IBV_QP_SQ_PSN,
        IBV_QP_MAX_DEST_RD_ATOMIC,
        IBV_QP_DEST_QPN,
        IBV_WR_RDMA_WRITE,
        IBV_WR_RDMA_WRITE_WITH_IMM,
        IBV_WR_SEND,
        IBV_WR_RDMA_READ,
        IBV_SEND_SIGNALED,
        IBV_SEND_INLINE,
        IBV_WC_SUCCESS,
        IBV_WC_LOC_LEN_ERR,
        IBV_WC_LOC_QP_OP_ERR,
        IBV_WC_LOC_PROT_ERR,
        IBV_WC_WR_FLUSH_ERR,
        IBV_WC_LOC_ACCESS_ERR,
        IBV_WC_REM_INV_REQ_ERR,
        IBV_WC_REM_ACCESS_ERR,
        IBV_WC_REM_OP_ERR,
        IBV_WC_RETRY_EXC_ERR,
        IBV_WC_RNR_RETRY_EXC_ERR,
        IBV_WC_REM_INV_RD_REQ_ERR,
        IBV_WC_REM_ABORT_ERR,
        IBV_WC_FATAL_ERR,
        IBV_WC_RESP_TIMEOUT_ERR,
        IBV_WC_GENERAL_ERR,
        IBV_WC_SEND,
        IBV_WC_RDMA_WRITE,
        IBV_WC_RDMA_READ,
        IBV_WC_RECV,
        IBV_WC_RECV_RDMA_WITH_IMM,
        IBV_WC_WITH_IMM,
    ]
}

fn c_program() -> String {
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include <infiniband/verbs.h>\nint main(void) {\n",
    );
    for (ty, field, _) in table() {
        if field.is_empty() {
            c += &format!("  printf(\"{ty}|%zu\\n\", sizeof({ty}));\n");
        } else {
            c += &format!("  printf(\"{ty}|{field}|%zu\\n\", offsetof({ty}, {field}));\n");
        }
    }
    for (name, _) in constants() {
        c += &format!("  printf(\"{name}|%lld\\n\", (long long)({name}));\n");
    }
    c + "  return 0;\n}\n"
}

#[test]
fn rust_structs_match_the_c_header() {
    let required = std::env::var("NODELINK_REQUIRE_VERBS_HEADER").as_deref() == Ok("1");
    if !Path::new("/usr/include/infiniband/verbs.h").exists() {
        assert!(
            !required,
            "<infiniband/verbs.h> is missing: apt-get install libibverbs-dev (NODELINK_REQUIRE_VERBS_HEADER=1)"
        );
        eprintln!("skipped: <infiniband/verbs.h> missing (apt-get install libibverbs-dev)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout.c");
    let exe = dir.path().join("layout");
    std::fs::write(&src, c_program()).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e} (install gcc)"));
    assert!(
        out.status.success(),
        "compiling the layout program failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let mut c_values = printed.lines();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (ty, field, rust) in table() {
        let line = c_values.next().expect("one line per entry");
        let c: usize = line.rsplit('|').next().unwrap().parse().unwrap();
        checked += 1;
        if c != rust {
            let what = if field.is_empty() { "sizeof" } else { field };
            wrong.push(format!("{ty} {what}: C {c}, Rust {rust}"));
        }
    }
    for (name, rust) in constants() {
        let line = c_values.next().expect("one line per constant");
        let c: i64 = line.rsplit('|').next().unwrap().parse().unwrap();
        checked += 1;
        if c != rust {
            wrong.push(format!("{name}: C {c}, Rust {rust}"));
        }
    }
    assert!(wrong.is_empty(), "ABI mismatches:\n{}", wrong.join("\n"));
    assert!(checked > 200, "only {checked} entries compared");
}
