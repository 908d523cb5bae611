//! The pods their veths declare ([`kxdp_control::pod_declaration`]), read from the link
//! notifications the agent follows anyway, into the model: `kxdp-cni` writes the declaration
//! on the node end before it brings it up, so the agent serves the pod as soon as its veth is
//! up, before `ADD` returns and before the API lists the pod (the kubelet reports the pod's
//! address only after `ADD`). The compiler decides what a declaration is worth (the API's pod
//! wins; a misnamed veth, an address outside the pod CIDR or taken is a named problem); here a
//! veth's declaration comes with its link and goes with it. A veth without one (the test
//! bed's) is left to the API, as before.

use std::collections::BTreeMap;

use kxdp_control::model::Model;
use kxdp_control::pod_declaration::PodDeclaration;

use crate::nodefacts::Link;

/// The pod `link` declares, if it is a veth with a declaration; a malformed one is logged
/// and counts as none.
fn declaration(link: &Link) -> Option<PodDeclaration> {
    if !link.veth {
        return None;
    }
    match PodDeclaration::parse(link.alias.as_deref()?) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(interface = %link.name, error = %e, "pod declaration ignored");
            None
        }
    }
}

/// A link appeared or changed: its declaration (or its lack of one) into `model`; true if
/// the model changed.
pub(crate) fn link_changed(model: &mut Model, link: &Link) -> bool {
    let declared = declaration(link);
    if declared.is_none() && !model.declared().contains_key(&link.name) {
        return false;
    }
    model.set_declared(&link.name, declared)
}

/// A link went: its declaration goes with it; true if the model changed.
pub(crate) fn link_gone(model: &mut Model, name: &str) -> bool {
    model.set_declared(name, None)
}

/// The whole link table, read again: exactly its declarations; true if the model changed.
pub(crate) fn links_resynced(model: &mut Model, links: &[Link]) -> bool {
    let declared: BTreeMap<String, PodDeclaration> = links
        .iter()
        .filter_map(|l| Some((l.name.clone(), declaration(l)?)))
        .collect();
    model.replace_declared(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth(name: &str, alias: Option<&str>) -> Link {
        Link {
            index: 7,
            name: name.into(),
            mac: None,
            mtu: 1450,
            up: true,
            peer: None,
            peer_elsewhere: true,
            veth: true,
            alias: alias.map(Into::into),
        }
    }

    #[test]
    fn a_declaration_comes_and_goes_with_its_veth() {
        let mut model = Model::new();
        let alias = "kxdp-pod default/web-0 10.244.1.7";
        assert!(link_changed(&mut model, &veth("kxa", Some(alias))));
        assert_eq!(
            model.declared()["kxa"].ip,
            std::net::Ipv4Addr::new(10, 244, 1, 7)
        );
        assert!(
            model.take_changes().pods,
            "a declaration recompiles the pods"
        );
        assert!(!link_changed(&mut model, &veth("kxa", Some(alias))));
        // Not a veth, no alias, another alias, a malformed one: no declaration.
        let mut not_veth = veth("kxb", Some(alias));
        not_veth.veth = false;
        for l in [
            not_veth,
            veth("kxc", None),
            veth("kxd", Some("kxdp host interface")),
            veth("kxe", Some("kxdp-pod nonsense")),
        ] {
            assert!(!link_changed(&mut model, &l), "{}", l.name);
        }
        // The alias cleared: the declaration goes.
        assert!(link_changed(&mut model, &veth("kxa", None)));
        assert!(model.declared().is_empty());
        assert!(link_changed(&mut model, &veth("kxa", Some(alias))));
        assert!(link_gone(&mut model, "kxa"));
        assert!(!link_gone(&mut model, "kxa"));
        // A resync keeps exactly what the table declares.
        model.set_declared("kxgone", PodDeclaration::parse(alias).unwrap());
        assert!(links_resynced(
            &mut model,
            &[veth("kxa", Some(alias)), veth("kxc", None)]
        ));
        assert_eq!(
            model.declared().keys().collect::<Vec<_>>(),
            ["kxa"],
            "{:?}",
            model.declared()
        );
        assert!(!links_resynced(&mut model, &[veth("kxa", Some(alias))]));
    }
}
