//! [`AttachPolicy`] and all of its rules: which attaches it admits, whether it reads the
//! attach parameter, and the order it runs programs in.

/// Most programs per attach parameter under [`AttachPolicy::MultiAttachWithWildcard`]
/// (`NET_EBPF_EXT_MAX_CLIENTS_PER_HOOK_MULTI_ATTACH`).
pub const MAX_CLIENTS_PER_PARAMETER: usize = 16;

/// How many programs may attach, and how attach parameters interact.
///
/// An attach parameter is `Some(p)` for a specific one and `None` for the wildcard (a zero
/// `data_size`, or the hook's configured wildcard value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachPolicy {
    /// One program per hook (netebpfext `ATTACH_CAPABILITY_SINGLE_ATTACH`).
    SingleAttach,
    /// One program per attach parameter; a wildcard is refused if anything is attached, and an
    /// existing wildcard does not block a specific parameter
    /// (`ATTACH_CAPABILITY_SINGLE_ATTACH_PER_HOOK`). The specific program runs before the
    /// wildcard, whichever attached first.
    SingleAttachPerParameter,
    /// Up to [`MAX_CLIENTS_PER_PARAMETER`] programs per parameter; wildcard programs run after
    /// specific ones (`ATTACH_CAPABILITY_MULTI_ATTACH_WITH_WILDCARD`).
    ///
    /// The wildcards are one group of at most [`MAX_CLIENTS_PER_PARAMETER`], however a client
    /// asked for the wildcard. netebpfext groups clients by their attach data's bytes, so on a
    /// hook whose configured wildcard value is also a valid parameter (sock_addr's compartment
    /// 0) the clients without attach data and those with the wildcard value fill two groups of
    /// 16 there, 32 wildcard programs in all; here the 17th is refused.
    MultiAttachWithWildcard,
    /// Any number of programs; attach data is ignored (ntosebpfext's process hook).
    Unrestricted,
}

impl AttachPolicy {
    /// Whether the policy reads the client's attach parameter at all (under
    /// [`AttachPolicy::Unrestricted`] every attach is a wildcard attach).
    #[must_use]
    pub const fn reads_parameter(self) -> bool {
        !matches!(self, AttachPolicy::Unrestricted)
    }

    /// Whether an attach with `requested` is admitted next to the programs attached with
    /// `attached` (their parameters, detaching ones excluded).
    #[must_use]
    pub fn admits<'a, P: PartialEq + 'a>(
        self,
        attached: impl Iterator<Item = Option<&'a P>> + Clone,
        requested: Option<&P>,
    ) -> bool {
        match self {
            AttachPolicy::SingleAttach => attached.clone().next().is_none(),
            AttachPolicy::SingleAttachPerParameter => match requested {
                None => attached.clone().next().is_none(),
                Some(p) => !attached.clone().any(|q| q == Some(p)),
            },
            AttachPolicy::MultiAttachWithWildcard => {
                attached.filter(|q| *q == requested).count() < MAX_CLIENTS_PER_PARAMETER
            }
            AttachPolicy::Unrestricted => true,
        }
    }

    /// Whether wildcard programs run after every specific one (each group in attach order)
    /// rather than in plain attach order: under the two policies that admit both kinds at
    /// once. (Under the others every program is a wildcard, or there is only one.)
    #[must_use]
    pub const fn runs_wildcards_last(self) -> bool {
        matches!(
            self,
            AttachPolicy::MultiAttachWithWildcard | AttachPolicy::SingleAttachPerParameter
        )
    }

    /// Arranges the programs of a new snapshot in this policy's invocation order: `attached`
    /// (the programs staying, in their current order) with `added` appended, through `push`.
    pub(crate) fn arrange<T: Copy>(
        self,
        attached: impl Iterator<Item = T> + Clone,
        added: Option<T>,
        is_wildcard: impl Fn(T) -> bool,
        mut push: impl FnMut(T),
    ) {
        let all = attached.chain(added);
        if self.runs_wildcards_last() {
            all.clone().filter(|&e| !is_wildcard(e)).for_each(&mut push);
            all.filter(|&e| is_wildcard(e)).for_each(&mut push);
        } else {
            all.for_each(push);
        }
    }

    /// ntosebpfext's `check_attach_parameter` rule, offered to an on-attach callback through
    /// [`crate::Attached::check_exclusive_wildcard`]: a wildcard request conflicts with
    /// anything attached; a specific request conflicts with a wildcard or the same parameter.
    #[must_use]
    pub fn exclusive_wildcard_conflict<'a, P: PartialEq + 'a>(
        mut attached: impl Iterator<Item = Option<&'a P>>,
        requested: Option<&P>,
    ) -> bool {
        match requested {
            None => attached.next().is_some(),
            Some(p) => attached.any(|q| q.is_none_or(|q| q == p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: &[Option<u32>]) -> impl Iterator<Item = Option<&u32>> + Clone {
        v.iter().map(Option::as_ref)
    }

    #[test]
    fn each_policy_admits_as_documented() {
        let some = [Some(1), None];
        assert!(!AttachPolicy::SingleAttach.admits(params(&some), Some(&2)));
        assert!(AttachPolicy::SingleAttach.admits(params(&[]), None));
        let per = AttachPolicy::SingleAttachPerParameter;
        assert!(!per.admits(params(&some), Some(&1)));
        assert!(
            per.admits(params(&some), Some(&2)),
            "a wildcard does not block"
        );
        assert!(!per.admits(params(&[Some(1)]), None));
        let full = [Some(1); MAX_CLIENTS_PER_PARAMETER];
        let multi = AttachPolicy::MultiAttachWithWildcard;
        assert!(!multi.admits(params(&full), Some(&1)));
        assert!(multi.admits(params(&full), Some(&2)));
        assert!(multi.admits(params(&full), None));
        assert!(AttachPolicy::Unrestricted.admits(params(&full), None));
    }

    #[test]
    fn wildcards_run_last_where_both_kinds_attach() {
        let attached = [Some(1), None, Some(2)];
        let arranged = |policy: AttachPolicy, added| {
            let (mut order, mut n) = ([Some(0); 4], 0);
            policy.arrange(
                attached.iter().copied(),
                Some(added),
                |e: Option<u32>| e.is_none(),
                |e| {
                    order[n] = e;
                    n += 1;
                },
            );
            order
        };
        assert_eq!(
            arranged(AttachPolicy::MultiAttachWithWildcard, Some(3)),
            [Some(1), Some(2), Some(3), None]
        );
        assert_eq!(
            arranged(AttachPolicy::SingleAttachPerParameter, Some(3)),
            [Some(1), Some(2), Some(3), None]
        );
        assert_eq!(
            arranged(AttachPolicy::Unrestricted, None),
            [Some(1), None, Some(2), None],
            "plain attach order"
        );
    }

    #[test]
    fn the_exclusive_wildcard_rule() {
        let conflict = AttachPolicy::exclusive_wildcard_conflict;
        assert!(conflict(params(&[Some(1)]), None));
        assert!(!conflict(params(&[]), None));
        assert!(conflict(params(&[None]), Some(&2)));
        assert!(conflict(params(&[Some(2)]), Some(&2)));
        assert!(!conflict(params(&[Some(1)]), Some(&2)));
    }
}
