//! The Kubernetes source: kube's runtime watchers for Services, EndpointSlices, Nodes, this
//! node's Pods, and for NetworkPolicy Namespaces, NetworkPolicies and every Pod as a peer,
//! feeding the cluster model.
//!
//! Each watcher lists, then watches, and relists when it must (410 Gone, a broken stream),
//! retrying with kube's default backoff while the API server is away; meanwhile the model, and
//! so the published tables, stay as they were. A relist replaces everything of its kind: an
//! object not listed again is deleted. Nothing is handed on until every watcher has finished
//! its first list, so the first tables are complete.
//!
//! Services are watched with kube-proxy's label selector (no `service-proxy-name`, not
//! headless), slices by their service-name label, the pods this node serves by
//! `spec.nodeName`.
//!
//! A policy's peers are pods of any node, so every pod is watched a second time, cluster-wide,
//! as [`Kind::PeerPod`] (the model keeps only namespace, labels, address and named ports), from
//! the start and whether or not any policy exists, as Calico's Felix receives every workload
//! endpoint: the first policy then compiles against complete peers, with no window in which a
//! peer on another node is unknown and its allowed traffic denied. The node's own watch stays,
//! so serving this node's pods never waits on the larger list. The node's overlay
//! identity is published on its Node object with flannel's annotations, so flannel nodes and
//! kxdp nodes find each other.

use std::net::Ipv4Addr;
use std::path::Path;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use kxdp_dataplane::wire::EthernetAddress;

use crate::model::{
    Kind, Model, Object, ObjectError, FLANNEL_BACKEND_DATA, FLANNEL_BACKEND_TYPE,
    FLANNEL_KUBE_SUBNET_MANAGER, FLANNEL_PUBLIC_IP, SERVICE_NAME,
};

/// kube-proxy's selector for the services it serves.
pub const SERVICE_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// One resource the source calls, as RBAC names it: the API group (`""` for the core group),
/// the resource's plural, and the verbs used on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiAccess {
    /// The API group (`""`: the core group).
    pub group: &'static str,
    /// The resource, plural and lower case as in a URL.
    pub resource: &'static str,
    /// The verbs, as RBAC names them (`list`, `watch`, `patch`, ...).
    pub verbs: &'static [&'static str],
}

/// Every call [`KubeSource`] makes to the API server: what the agent's ClusterRole
/// (`deploy/kxdp.yaml`) must grant, and all it needs. A watcher or a call added here without a
/// line in this list fails the deployment test, which runs the source against a recording API
/// server and checks each request it sees against this list and this list against the role.
pub const API_ACCESS: &[ApiAccess] = &[
    ApiAccess {
        group: "",
        resource: "services",
        verbs: &["list", "watch"],
    },
    ApiAccess {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
    },
    // Watched, and this node's own Node patched with flannel's annotations.
    ApiAccess {
        group: "",
        resource: "nodes",
        verbs: &["list", "watch", "patch"],
    },
    // This node's pods, and every pod as a NetworkPolicy peer.
    ApiAccess {
        group: "",
        resource: "pods",
        verbs: &["list", "watch"],
    },
    // Their labels, for NetworkPolicy `namespaceSelector`s.
    ApiAccess {
        group: "",
        resource: "namespaces",
        verbs: &["list", "watch"],
    },
    ApiAccess {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: &["list", "watch"],
    },
];

/// How many watchers the source runs, one per [`Kind`].
pub const WATCHERS: usize = 7;

/// A kube client from a kubeconfig file, or else the usual way (`KUBECONFIG`, `~/.kube/config`,
/// the in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, kube::Error> {
    let config = match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(kube::Error::InferKubeconfig)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(kube::Error::InferKubeconfig)?
        }
        None => kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?,
    };
    Client::try_from(config)
}

/// What happened since the last report, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// Whether every watcher has finished its first list.
    pub synced: bool,
    /// Watch errors seen (each retried with backoff).
    pub errors: u64,
    /// The last of them.
    pub last_error: Option<String>,
    /// Lists completed (first lists and relists), per kind: services, slices, nodes, this
    /// node's pods, namespaces, network policies, every pod (peers).
    pub lists: [u64; WATCHERS],
    /// Objects that could not be used, with why (the last 16).
    pub rejected: Vec<String>,
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::Service => 0,
        Kind::EndpointSlice => 1,
        Kind::Node => 2,
        Kind::Pod => 3,
        Kind::Namespace => 4,
        Kind::NetworkPolicy => 5,
        Kind::PeerPod => 6,
    }
}

/// One watcher's event, of any kind.
enum Ev {
    Event(Kind, Event<Object>),
    Error(String),
}

fn stream<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    wrap: fn(K) -> Object,
) -> impl futures::Stream<Item = Ev> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config)
        .default_backoff()
        .map(move |r| match r {
            Ok(e) => Ev::Event(kind, e.map_object(wrap)),
            Err(e) => Ev::Error(e.to_string()),
        })
}

/// `Event::map` for our wrapper.
trait MapObject<K> {
    fn map_object(self, f: fn(K) -> Object) -> Event<Object>;
}

impl<K> MapObject<K> for Event<K> {
    fn map_object(self, f: fn(K) -> Object) -> Event<Object> {
        match self {
            Event::Apply(o) => Event::Apply(f(o)),
            Event::Delete(o) => Event::Delete(f(o)),
            Event::Init => Event::Init,
            Event::InitApply(o) => Event::InitApply(f(o)),
            Event::InitDone => Event::InitDone,
        }
    }
}

/// The watchers of one node's view of the cluster.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    node_name: String,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("node_name", &self.node_name)
            .finish()
    }
}

impl KubeSource {
    /// Watch the cluster for node `node_name`.
    pub fn new(client: Client, node_name: &str) -> KubeSource {
        KubeSource {
            client,
            node_name: node_name.to_owned(),
        }
    }

    /// Publish this node's overlay identity on its Node object, as flanneld does: VXLAN
    /// backend with `vni` and `vtep_mac`, reached at `public_ip`.
    pub async fn publish_node_annotations(
        &self,
        vni: u32,
        vtep_mac: EthernetAddress,
        public_ip: Ipv4Addr,
    ) -> Result<(), kube::Error> {
        let mac = crate::model::mac_text(vtep_mac);
        let patch = serde_json::json!({
            "metadata": {"annotations": {
                FLANNEL_BACKEND_DATA: format!("{{\"VNI\":{vni},\"VtepMAC\":\"{mac}\"}}"),
                FLANNEL_BACKEND_TYPE: "vxlan",
                FLANNEL_PUBLIC_IP: public_ip.to_string(),
                FLANNEL_KUBE_SUBNET_MANAGER: "true",
            }}
        });
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch(
                &self.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
    }

    /// Watch until the returned future is dropped. After every watcher's first list, and then
    /// after every batch of events that changed the model, `on_change` gets the model (to
    /// compile and publish) and the source's status.
    pub async fn run(
        self,
        model: &mut Model,
        mut on_change: impl FnMut(&mut Model, &SourceStatus),
    ) {
        let mut watch = self.watch();
        while let Some(publish) = watch.next(model).await {
            if publish {
                on_change(model, watch.status());
            }
        }
    }

    /// The watchers as a [`Watch`], for a caller that waits on other things too.
    pub fn watch(self) -> Watch {
        let c = &self.client;
        let pods = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
        let events = futures::stream::select_all([
            stream(
                Api::<Service>::all(c.clone()),
                watcher::Config::default().labels(SERVICE_SELECTOR),
                Kind::Service,
                |o| Object::Service(Box::new(o)),
            )
            .boxed(),
            stream(
                Api::<EndpointSlice>::all(c.clone()),
                watcher::Config::default().labels(SERVICE_NAME),
                Kind::EndpointSlice,
                |o| Object::EndpointSlice(Box::new(o)),
            )
            .boxed(),
            stream(
                Api::<Node>::all(c.clone()),
                watcher::Config::default(),
                Kind::Node,
                |o| Object::Node(Box::new(o)),
            )
            .boxed(),
            stream(Api::<Pod>::all(c.clone()), pods, Kind::Pod, |o| {
                Object::Pod(Box::new(o))
            })
            .boxed(),
            stream(
                Api::<Namespace>::all(c.clone()),
                watcher::Config::default(),
                Kind::Namespace,
                |o| Object::Namespace(Box::new(o)),
            )
            .boxed(),
            stream(
                Api::<NetworkPolicy>::all(c.clone()),
                watcher::Config::default(),
                Kind::NetworkPolicy,
                |o| Object::NetworkPolicy(Box::new(o)),
            )
            .boxed(),
            stream(
                Api::<Pod>::all(c.clone()),
                watcher::Config::default(),
                Kind::PeerPod,
                |o| Object::PeerPod(Box::new(o)),
            )
            .boxed(),
        ]);
        Watch {
            events,
            status: SourceStatus::default(),
            synced: [false; WATCHERS],
            buffers: Default::default(),
            published: false,
        }
    }
}

/// Running watchers: [`Watch::next`] applies their next batch of events to the model.
pub struct Watch {
    events: futures::stream::SelectAll<futures::stream::BoxStream<'static, Ev>>,
    status: SourceStatus,
    synced: [bool; WATCHERS],
    buffers: [Option<Vec<Object>>; WATCHERS],
    published: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("status", &self.status)
            .finish()
    }
}

impl Watch {
    /// What happened so far.
    pub fn status(&self) -> &SourceStatus {
        &self.status
    }

    /// Wait for events and apply them, with whatever else is ready at once, to `model`.
    /// Returns whether the model should now be compiled and published: every watcher has
    /// listed, and the model changed or was never published. `None` once the watchers end.
    pub async fn next(&mut self, model: &mut Model) -> Option<bool> {
        let ev = self.events.next().await?;
        self.handle(ev, model);
        // Take whatever else is ready now, so a burst compiles once.
        while let Some(Some(ev)) = self.events.next().now_or_never() {
            self.handle(ev, model);
        }
        self.status.synced = self.synced.iter().all(|s| *s);
        let publish = self.status.synced && (!model.is_clean() || !self.published);
        self.published |= publish;
        Some(publish)
    }

    fn handle(&mut self, ev: Ev, model: &mut Model) {
        match ev {
            Ev::Error(e) => {
                self.status.errors += 1;
                self.status.last_error = Some(e);
            }
            Ev::Event(kind, e) => {
                let i = index(kind);
                let rejected = match e {
                    Event::Init => {
                        self.buffers[i] = Some(Vec::new());
                        Vec::new()
                    }
                    Event::InitApply(o) => {
                        self.buffers[i].get_or_insert_with(Vec::new).push(o);
                        Vec::new()
                    }
                    Event::InitDone => {
                        let listed = self.buffers[i].take().unwrap_or_default();
                        self.synced[i] = true;
                        self.status.lists[i] += 1;
                        model.replace_kind(kind, &listed)
                    }
                    Event::Apply(o) => model.apply(&o).err().into_iter().collect(),
                    Event::Delete(o) => {
                        model.remove(kind, &o.key());
                        Vec::new()
                    }
                };
                reject(&mut self.status, rejected);
            }
        }
    }
}

fn reject(status: &mut SourceStatus, errors: Vec<ObjectError>) {
    for e in errors {
        if status.rejected.len() == 16 {
            status.rejected.remove(0);
        }
        status.rejected.push(e.to_string());
    }
}
