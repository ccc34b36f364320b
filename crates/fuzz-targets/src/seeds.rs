//! Valid inputs for each target: the starting points of the in-tree corpus. The tests
//! check that every one of them decodes, so a seed that rots is caught.

use fabric::control::{MAGIC, VERSION};

/// One control frame: header, then `payload` (the message sets' payloads are JSON).
fn frame(kind: u8, payload: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(11 + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload.as_bytes());
    out
}

const ENDPOINT: &str = r#"{"device":"rxe0","lid":0,"gid":"fe80::1","gid_index":1,"mtu":1024,"qps":[{"qpn":17,"psn":42}],"region":{"addr":4096,"len":67108864,"rkey":7}}"#;
const TEST: &str = r#"{"kind":"bw","op":"write","size":65536,"qps":1,"tx_depth":128,"iterations":1000,"validate":false,"inline":0,"seed":1}"#;
const SHAPE: &str = r#"{"model":"llama-3.1-8b","layers":32,"kv_heads":8,"head_dim":128,"dtype":"bf16","block_size":16,"order":"nhd"}"#;

pub fn control() -> Vec<Vec<u8>> {
    let hello = r#"{"version":1,"tool":"linkbench","software":"0.1.0","nonce":"00ff00ff00ff00ff00ff00ff00ff00ff","auth":true}"#;
    let request = format!(r#"{{"test":{TEST},"endpoint":{ENDPOINT}}}"#);
    let accept = format!(r#"{{"endpoint":{ENDPOINT}}}"#);
    vec![
        frame(1, hello),
        frame(2, r#"{"mac":"00ff"}"#),
        frame(6, ""),
        frame(10, ""),
        frame(11, &request),
        frame(12, &accept),
        // A session's opening, two frames back to back.
        [frame(1, hello), frame(2, r#"{"mac":"ab"}"#)].concat(),
    ]
}

pub fn kvxfer() -> Vec<Vec<u8>> {
    let attach = format!(r#"{{"shape":{SHAPE},"hash":"h","decode_tp":2,"decode_rank":1}}"#);
    let welcome = format!(
        r#"{{"shape":{SHAPE},"hash":"h","tp":2,"tp_rank":0,"dp_rank":0,"num_blocks":64,"lease_ms":10000,"rails":["10.0.0.1:18600"],"rail_cookie":"c0ffee"}}"#
    );
    vec![
        frame(64, &attach),
        frame(65, &welcome),
        frame(
            66,
            r#"{"request_id":"req-1","tokens":2048,"dp_rank":0,"tp_rank":0,"readers":1,"fill":true}"#,
        ),
        frame(67, r#"{"request_id":"req-1","blocks":[0,1,2]}"#),
        frame(
            68,
            r#"{"request_id":"req-1","dp_rank":0,"tp_rank":0,"blocks":[0,1,2],"head_start":0,"head_end":4,"checksums":true,"rdma":false,"rails":2}"#,
        ),
        frame(69, r#"{"request_id":"req-1","bytes":393216}"#),
        frame(70, r#"{"request_id":"req-1","crc32c":[1,2,3]}"#),
        frame(71, r#"{"request_id":"req-1","ok":true}"#),
        frame(72, r#"{"request_id":null,"message":"pool full"}"#),
        frame(73, ""),
        frame(74, ENDPOINT),
        frame(76, r#"{"request_id":"req-1","crc32c":[]}"#),
        frame(77, r#"{"request_id":"req-1"}"#),
        frame(78, r#"{"cookie":"c0ffee","index":1}"#),
        frame(79, ""),
    ]
}

pub fn pair() -> Vec<Vec<u8>> {
    vec![
        frame(
            98,
            r#"[{"port":6379,"purpose":"Ray GCS"},{"port":5600,"purpose":"NIXL side channel"}]"#,
        ),
        frame(
            99,
            r#"[{"port":6379,"error":null},{"port":5600,"error":"in use"}]"#,
        ),
        frame(100, ""),
        frame(103, ""),
        frame(104, "40000"),
        frame(106, "[1500,9000]"),
        frame(109, ""),
        frame(110, "18517"),
        frame(112, ""),
        frame(113, r#""the peer gave up""#),
    ]
}

pub fn cluster() -> Vec<Vec<u8>> {
    vec![
        frame(121, r#"{"ListenFor":{"pair":3,"peer_rank":2}}"#),
        frame(122, r#"{"Listening":{"pair":3,"port":40001}}"#),
        frame(
            123,
            r#"{"ConnectTo":{"pair":3,"peer_rank":1,"addr":"10.0.0.2:40001"}}"#,
        ),
        frame(
            124,
            r#"{"PairDone":{"pair":3,"measured":null,"error":"refused"}}"#,
        ),
        frame(
            125,
            r#"{"Verdict":{"exit_code":2,"summary":"rank 2 is slow"}}"#,
        ),
        frame(126, r#"{"Error":"rank 0 gave up"}"#),
    ]
}

pub fn rendezvous() -> Vec<Vec<u8>> {
    [
        (
            141,
            r#"{"Join":{"rank":1,"world":2,"data_addr":"10.0.0.2:40000"}}"#,
        ),
        (
            142,
            r#"{"Table":{"addrs":["10.0.0.1:40000","[fe80::1]:40001"],"job_key":"k"}}"#,
        ),
        (143, r#"{"Peer":{"rank":1,"mac":"cd"}}"#),
        (144, r#""Ready""#),
        (145, r#""Go""#),
        (146, r#"{"Abort":{"reason":"rank 1 died"}}"#),
    ]
    .iter()
    .map(|(kind, payload)| frame(*kind, payload))
    .collect()
}

pub fn rdma_endpoint() -> Vec<Vec<u8>> {
    let read = TEST
        .replace(r#""op":"write""#, r#""op":"read""#)
        .replace(r#""qps":1"#, r#""qps":2"#);
    let two_qps = ENDPOINT.replace(
        r#""qps":[{"qpn":17,"psn":42}]"#,
        r#""qps":[{"qpn":17,"psn":42},{"qpn":18,"psn":43}]"#,
    );
    vec![
        format!(r#"{{"test":{TEST},"endpoint":{ENDPOINT}}}"#).into_bytes(),
        format!(r#"{{"test":{read},"endpoint":{two_qps}}}"#).into_bytes(),
    ]
}

/// Little-endian u32s: layers, kv_heads, head_dim, dtype, block_size, order, prefill TP,
/// decode TP, blocks.
fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn kv_layout() -> Vec<Vec<u8>> {
    vec![
        words(&[32, 8, 128, 1, 16, 0, 2, 4, 16]),
        words(&[2, 1, 64, 0, 4, 1, 1, 2, 3]),
        words(&[48, 8, 128, 2, 16, 0, 8, 2, 7]),
    ]
}

pub fn units() -> Vec<Vec<u8>> {
    ["64K", "1MiB", "8G", "1.5M", "250ms", "3s", "2m", "1h"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

pub fn user_files() -> Vec<Vec<u8>> {
    let with = |which: u8, text: &str| [&[which][..], text.as_bytes()].concat();
    vec![
        with(
            0,
            r#"{"request_throughput":0.99,"output_throughput":1981.66,"mean_ttft_ms":47.23,"mean_tpot_ms":7.31,"max_concurrency":16,"random_input_len":2000,"random_output_len":2000}"#,
        ),
        with(
            0,
            "request_throughput,mean_ttft_ms,mean_tpot_ms,max_concurrency\n1.59,120,9.5,200\n",
        ),
        with(
            1,
            r#"{"tool":"collbench","version":"0.1.0","test":"sweep","op":"all_reduce","backend":"tcp","world":2,"dtype":"fp32","redop":"sum","avg_busbw_gbs":1.0,"wrong":0,"rows":[
{"bytes":4096,"count":1024,"dtype":"fp32","redop":"sum","root":-1,"time_us":30,"algbw_gbs":0.1,"busbw_gbs":0.1,"wrong":0,"p50_us":30,"p99_us":31,"in_place":{"time_us":30,"algbw_gbs":0.1,"busbw_gbs":0.1,"wrong":0}},
{"bytes":65536,"count":16384,"dtype":"fp32","redop":"sum","root":-1,"time_us":90,"algbw_gbs":0.7,"busbw_gbs":0.7,"wrong":0,"p50_us":90,"p99_us":92,"in_place":{"time_us":90,"algbw_gbs":0.7,"busbw_gbs":0.7,"wrong":0}}]}"#,
        ),
        with(
            1,
            r#"{"tool":"linkbench","version":"0.1.0","test":"lat","peer":"h:5201","one_way":"round trip / 2","sweep":[
{"transport":"tcp","msg_size":2,"latency_us":{"min":4.0,"mean":5.0,"p50":5.0,"p90":6.0,"p99":7.0,"p999":8.0,"max":9.0,"stdev":0.5,"samples":1000}},
{"transport":"tcp","msg_size":65536,"latency_us":{"min":39.0,"mean":40.0,"p50":40.0,"p90":41.0,"p99":42.0,"p999":43.0,"max":44.0,"stdev":0.5,"samples":1000}}]}"#,
        ),
        with(2, "tp4,pp2@2x4"),
        with(3, "[link]\ntcp_min_gbps = 20.0\nmax_latency_us = 50.0\n"),
    ]
}
