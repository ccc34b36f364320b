//! NCCL's interface-list syntax (NCCL_SOCKET_IFNAME, NCCL_IB_HCA): a comma list of
//! prefixes; a leading `^` excludes instead of selects; `=` means exact names, not prefixes.
//! NCCL_IB_HCA entries may carry a `:port` suffix.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfnameSpec {
    pub exclude: bool,
    pub exact: bool,
    /// Names or prefixes, with any `:port` suffix removed.
    pub items: Vec<String>,
}

impl IfnameSpec {
    pub fn parse(text: &str) -> Self {
        let mut rest = text.trim();
        let exclude = rest.starts_with('^');
        if exclude {
            rest = &rest[1..];
        }
        let exact = rest.starts_with('=');
        if exact {
            rest = &rest[1..];
        }
        let items = rest
            .split(',')
            .map(|item| item.split(':').next().unwrap_or("").trim().to_string())
            .filter(|item| !item.is_empty())
            .collect();
        IfnameSpec {
            exclude,
            exact,
            items,
        }
    }

    fn item_matches(&self, name: &str) -> bool {
        self.items.iter().any(|item| {
            if self.exact {
                name == item
            } else {
                name.starts_with(item.as_str())
            }
        })
    }

    /// Whether NCCL would use `name`.
    pub fn selects(&self, name: &str) -> bool {
        self.item_matches(name) != self.exclude
    }

    /// The subset of `names` NCCL would use.
    pub fn selected<'a>(&self, names: &[&'a str]) -> Vec<&'a str> {
        names.iter().copied().filter(|n| self.selects(n)).collect()
    }

    /// Listed items that match no name at all (typos); meaningful for include lists.
    pub fn unmatched_items(&self, names: &[&str]) -> Vec<String> {
        self.items
            .iter()
            .filter(|item| {
                !names.iter().any(|name| {
                    if self.exact {
                        name == &item.as_str()
                    } else {
                        name.starts_with(item.as_str())
                    }
                })
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 5] = ["lo", "eth0", "eth1", "eno1", "docker0"];

    #[test]
    fn prefix_selects_every_interface_starting_with_it() {
        let spec = IfnameSpec::parse("eth");
        assert_eq!(spec.selected(&NAMES), vec!["eth0", "eth1"]);
        assert_eq!(
            IfnameSpec::parse("e").selected(&NAMES),
            vec!["eth0", "eth1", "eno1"]
        );
    }

    #[test]
    fn exact_selects_only_the_named_interface() {
        let spec = IfnameSpec::parse("=eth0");
        assert!(spec.exact && !spec.exclude);
        assert_eq!(spec.selected(&NAMES), vec!["eth0"]);
        assert!(IfnameSpec::parse("=eth").selected(&NAMES).is_empty());
    }

    #[test]
    fn caret_excludes_prefixes_and_exact_names() {
        assert_eq!(
            IfnameSpec::parse("^lo,docker").selected(&NAMES),
            vec!["eth0", "eth1", "eno1"]
        );
        assert_eq!(
            IfnameSpec::parse("^=eth0").selected(&NAMES),
            vec!["lo", "eth1", "eno1", "docker0"]
        );
    }

    #[test]
    fn lists_and_port_suffixes() {
        let spec = IfnameSpec::parse("mlx5_0:1,mlx5_1:1");
        assert_eq!(spec.items, vec!["mlx5_0", "mlx5_1"]);
        assert_eq!(
            spec.unmatched_items(&["mlx5_0"]),
            vec!["mlx5_1".to_string()]
        );
        assert!(IfnameSpec::parse("ib").selected(&NAMES).is_empty());
    }
}
