//! Parallel plans: `tp4`, `tp4,pp2`, `dp2,tp4`, `dp8,pd` (prefill/decode disaggregated), each
//! optionally `@NODESxGPUS` (e.g. `tp4,pp2@2x4`). GPUs are placed TP innermost, then PP,
//! then DP, so a TP group spans nodes only when it is larger than a node.

use crate::{ModelError, ModelShape};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub tp: u64,
    pub pp: u64,
    pub dp: u64,
    /// Prefill on a separate pool of the same size; the KV cache crosses the inter-node link.
    pub pd: bool,
    pub nodes: u64,
    pub gpus_per_node: u64,
}

impl Plan {
    /// Parses a plan; without `@NxG`, nodes are as many `gpus_per_node` nodes as it needs.
    pub fn parse(text: &str, gpus_per_node: u64) -> Result<Self, ModelError> {
        const MAX_GPUS: u64 = 1 << 24;
        let bad = |why: String| ModelError::Invalid(format!("plan '{text}': {why}"));
        let lower = text.trim().to_ascii_lowercase();
        let (parts, place) = match lower.split_once('@') {
            Some((p, n)) => (p.to_string(), Some(n.to_string())),
            None => (lower.clone(), None),
        };
        if parts.trim().is_empty() {
            return Err(bad(
                "names no parallelism: write e.g. tp4, tp4,pp2 or dp2,tp4".into(),
            ));
        }
        let (mut tp, mut pp, mut dp, mut pd) = (None, None, None, false);
        for token in parts.split([',', 'x', '*', ' ']).filter(|t| !t.is_empty()) {
            if token == "pd" {
                pd = true;
                continue;
            }
            let (key, slot) = match token.get(..2) {
                Some("tp") => ("tp", &mut tp),
                Some("pp") => ("pp", &mut pp),
                Some("dp") => ("dp", &mut dp),
                _ => {
                    return Err(bad(format!(
                        "'{token}' is not tpN, ppN, dpN or pd; write e.g. tp4,pp2 or dp2,tp4@2x4"
                    )))
                }
            };
            let n: u64 = token[2..]
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(format!("'{token}' needs a positive count, e.g. {key}4")))?;
            if slot.replace(n).is_some() {
                return Err(bad(format!("{key} is given twice")));
            }
        }
        let (tp, pp, dp) = (tp.unwrap_or(1), pp.unwrap_or(1), dp.unwrap_or(1));
        // Checked: a typo like pp99999999999 overflowed the product (found by fuzzing).
        let too_many = || bad(format!("needs more than {MAX_GPUS} GPUs; check the counts"));
        let pool = [tp, pp, dp, if pd { 2 } else { 1 }]
            .into_iter()
            .try_fold(1u64, |acc, n| acc.checked_mul(n).filter(|p| *p <= MAX_GPUS))
            .ok_or_else(too_many)?;
        let (nodes, gpus_per_node) = match place {
            Some(place) => {
                let (n, g) = place
                    .split_once('x')
                    .ok_or_else(|| bad(format!("'@{place}' is not NODESxGPUS, e.g. @2x4")))?;
                let parse = |s: &str| s.parse::<u64>().ok().filter(|v| *v >= 1);
                match (parse(n), parse(g)) {
                    (Some(n), Some(g)) => (n, g),
                    _ => return Err(bad(format!("'@{place}' is not NODESxGPUS, e.g. @2x4"))),
                }
            }
            None => {
                let g = gpus_per_node.max(1);
                (pool.div_ceil(g), g)
            }
        };
        let offered = nodes
            .checked_mul(gpus_per_node)
            .filter(|g| *g <= MAX_GPUS)
            .ok_or_else(too_many)?;
        if pool > offered {
            return Err(bad(format!(
                "needs {pool} GPUs (TP x PP x DP{}) but {nodes} node(s) x {gpus_per_node} GPUs give {}; shrink the plan or add nodes",
                if pd { " x 2 for P/D" } else { "" },
                offered
            )));
        }
        Ok(Plan {
            tp,
            pp,
            dp,
            pd,
            nodes,
            gpus_per_node,
        })
    }

    /// GPUs that hold one copy of the model (TP x PP).
    pub fn replica_gpus(&self) -> u64 {
        self.tp * self.pp
    }

    /// All GPUs the plan uses.
    pub fn gpus(&self) -> u64 {
        self.replica_gpus() * self.dp * if self.pd { 2 } else { 1 }
    }

    /// Nodes the plan actually touches.
    pub fn nodes_used(&self) -> u64 {
        self.gpus().div_ceil(self.gpus_per_node)
    }

    /// Whether one TP group has GPUs on two nodes (its all-reduces cross the network).
    pub fn tp_spans_nodes(&self) -> bool {
        self.tp > self.gpus_per_node
    }

    /// PP stage boundaries of one replica that cross a node boundary, and those that don't.
    pub fn pp_boundaries(&self) -> (u64, u64) {
        let node = |gpu: u64| gpu / self.gpus_per_node;
        let crossing = (1..self.pp)
            .filter(|i| node(i * self.tp - 1) != node(i * self.tp))
            .count() as u64;
        (crossing, self.pp - 1 - crossing)
    }

    /// Rejects plans the model cannot be split by.
    pub fn check_model(&self, model: &ModelShape) -> Result<(), ModelError> {
        if model.heads.checked_rem(self.tp) != Some(0) {
            return Err(ModelError::Invalid(format!(
                "{}: TP {} does not divide the {} attention heads of {}; pick a TP that divides {}",
                self.name(),
                self.tp,
                model.heads,
                model.name,
                model.heads
            )));
        }
        if self.pp > model.layers {
            return Err(ModelError::Invalid(format!(
                "{}: PP {} is more stages than the {} layers of {}; use at most pp{}",
                self.name(),
                self.pp,
                model.layers,
                model.name,
                model.layers
            )));
        }
        Ok(())
    }

    /// "TP4xPP2 over 2 nodes".
    pub fn name(&self) -> String {
        let mut parts = Vec::new();
        if self.dp > 1 {
            parts.push(format!("DP{}", self.dp));
        }
        if self.tp > 1 || (self.pp == 1 && self.dp == 1) {
            parts.push(format!("TP{}", self.tp));
        }
        if self.pp > 1 {
            parts.push(format!("PP{}", self.pp));
        }
        let mut name = parts.join("x");
        if self.pd {
            name.push_str(" P/D");
        }
        let nodes = self.nodes_used();
        format!(
            "{name} over {nodes} node{}",
            if nodes == 1 { "" } else { "s" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tp_pp_dp_and_placement() {
        let plan = Plan::parse("tp4,pp2@2x4", 8).unwrap();
        assert_eq!((plan.tp, plan.pp, plan.dp, plan.nodes), (4, 2, 1, 2));
        assert_eq!(plan.pp_boundaries(), (1, 0));
        assert!(!plan.tp_spans_nodes());
        assert_eq!(plan.name(), "TP4xPP2 over 2 nodes");
        // Eight GPUs per node: the same plan fits one node and no boundary crosses.
        let one = Plan::parse("tp4xpp2", 8).unwrap();
        assert_eq!((one.nodes_used(), one.pp_boundaries()), (1, (0, 1)));
        let tp8 = Plan::parse("tp8", 4).unwrap();
        assert!(tp8.tp_spans_nodes() && tp8.nodes == 2);
        let dp = Plan::parse("dp8,pd", 8).unwrap();
        assert_eq!((dp.gpus(), dp.nodes, dp.tp), (16, 2, 1));
    }

    #[test]
    fn rejects_bad_plans_with_the_reason() {
        let error = Plan::parse("tp4,pp4@1x8", 8).unwrap_err().to_string();
        assert!(error.contains("needs 16 GPUs"), "{error}");
        assert!(Plan::parse("tp0", 8).is_err());
        // Counts whose product overflows are refused, not wrapped (found by fuzzing).
        let huge = Plan::parse("tp4,pp9999999999@2x4", 8).unwrap_err();
        assert!(huge.to_string().contains("more than"), "{huge}");
        assert!(Plan::parse("tp2@4294967296x4294967296", 8).is_err());
        assert!(Plan::parse("ep4", 8)
            .unwrap_err()
            .to_string()
            .contains("tpN"));
        assert!(Plan::parse("tp2,tp4", 8).is_err());
        // `--plan=` used to price TP1.
        for empty in ["", " ", "@1x8"] {
            let error = Plan::parse(empty, 8).unwrap_err().to_string();
            assert!(error.contains("names no parallelism"), "{error}");
        }
        let model = crate::find_model(&crate::configs_dir(), "llama-3.1-8b").unwrap();
        let error = Plan::parse("tp3", 8)
            .unwrap()
            .check_model(&model)
            .unwrap_err();
        assert!(error.to_string().contains("does not divide"), "{error}");
    }
}
