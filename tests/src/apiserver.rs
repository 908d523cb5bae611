//! A loopback stand-in for the Kubernetes API server, for tests that drive kube-rs clients and
//! watchers through the real list/watch protocol without a cluster.
//!
//! [`FakeApiServer`] listens on `127.0.0.1` over plain HTTP/1.1 (hyper, keep-alive on) and serves
//! Services, EndpointSlices, Nodes, Pods, Namespaces and NetworkPolicies as real Kubernetes JSON:
//!
//! - **list** (`GET /api/v1/pods`, `GET /api/v1/namespaces/{ns}/pods`, ...): a `PodList` whose
//!   items carry no `kind`/`apiVersion` (as a real server sends them), `metadata.resourceVersion`,
//!   and, when paged with `limit`, `metadata.continue` (a base64 token naming the snapshot's
//!   resourceVersion and the last key, in the real server's format) and `remainingItemCount`.
//!   Every page of a paged list shows the same snapshot. `resourceVersion` with
//!   `resourceVersionMatch=Exact` lists the state at that version.
//! - **watch** (`?watch=true`): HTTP 200 with a chunked body, one `{"type":..,"object":..}` line
//!   per event. From resourceVersion unset or `"0"` it first sends a synthetic `ADDED` for every
//!   object (and, with `sendInitialEvents=true`, a `BOOKMARK` annotated
//!   `k8s.io/initial-events-end`); from resourceVersion R it replays the remembered events after R,
//!   or, when R is older than the history it still remembers, sends one `ERROR` event holding a
//!   410 `Expired` Status and ends the stream. It ends cleanly after `timeoutSeconds`.
//! - **label and field selectors** filter lists and watches. A watch follows an object across its
//!   selector: a change that makes an object match arrives as `ADDED`, one that makes it stop
//!   matching as `DELETED` (the old object at the new resourceVersion), as the real watch cache
//!   does.
//! - **get** of one object and **patch** (JSON merge patch; a strategic merge patch is applied the
//!   same way, which is exact for maps such as `metadata.annotations` but replaces lists whole).
//!   Server-side apply and JSON patch get 415.
//! - `GET /version`; any other path gets a 404 `NotFound` Status.
//!
//! Every write takes the next value of one global resourceVersion counter, as etcd's revision
//! does. Errors are `Status` objects with the reason and code a real server uses.
//!
//! The server runs on its own thread with its own tokio runtime, so synchronous and asynchronous
//! tests use it alike; the state sits behind one mutex that is never held across an await, and a
//! watch is registered in the same critical section that computes its replay, so no event falls
//! between the two.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::StreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

/// A kind of object the server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `v1` Services, namespaced.
    Services,
    /// `discovery.k8s.io/v1` EndpointSlices, namespaced.
    EndpointSlices,
    /// `v1` Nodes, cluster-scoped.
    Nodes,
    /// `v1` Pods, namespaced.
    Pods,
    /// `v1` Namespaces, cluster-scoped.
    Namespaces,
    /// `networking.k8s.io/v1` NetworkPolicies, namespaced.
    NetworkPolicies,
}

impl Resource {
    const ALL: [Resource; 6] = [
        Resource::Services,
        Resource::EndpointSlices,
        Resource::Nodes,
        Resource::Pods,
        Resource::Namespaces,
        Resource::NetworkPolicies,
    ];

    fn index(self) -> usize {
        match self {
            Resource::Services => 0,
            Resource::EndpointSlices => 1,
            Resource::Nodes => 2,
            Resource::Pods => 3,
            Resource::Namespaces => 4,
            Resource::NetworkPolicies => 5,
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "discovery.k8s.io/v1",
            Resource::NetworkPolicies => "networking.k8s.io/v1",
            Resource::Services | Resource::Nodes | Resource::Pods | Resource::Namespaces => "v1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Resource::Services => "Service",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::Nodes => "Node",
            Resource::Pods => "Pod",
            Resource::Namespaces => "Namespace",
            Resource::NetworkPolicies => "NetworkPolicy",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
            Resource::Nodes => "nodes",
            Resource::Pods => "pods",
            Resource::Namespaces => "namespaces",
            Resource::NetworkPolicies => "networkpolicies",
        }
    }

    /// The name the real server uses in messages: `pods`, `endpointslices.discovery.k8s.io`.
    fn qualified_plural(self) -> String {
        match self.api_version().split_once('/') {
            Some((group, _)) => format!("{}.{group}", self.plural()),
            None => self.plural().to_owned(),
        }
    }

    fn namespaced(self) -> bool {
        !matches!(self, Resource::Nodes | Resource::Namespaces)
    }

    fn from_type(api_version: &str, kind: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.api_version() == api_version && r.kind() == kind)
    }

    /// The resource a URL names, from its group-version prefix (`api/v1`,
    /// `apis/discovery.k8s.io/v1`) and plural.
    fn from_path(group_version: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.api_version() == group_version && r.plural() == plural)
    }

    /// Field selectors the real server accepts for this resource, beyond `metadata.name` and
    /// `metadata.namespace`, with the value an absent field reads as.
    fn extra_fields(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Resource::Pods => &[
                ("spec.nodeName", ""),
                ("spec.restartPolicy", ""),
                ("spec.schedulerName", ""),
                ("spec.serviceAccountName", ""),
                ("spec.hostNetwork", "false"),
                ("status.phase", ""),
                ("status.podIP", ""),
                ("status.nominatedNodeName", ""),
            ],
            Resource::Nodes => &[("spec.unschedulable", "false")],
            Resource::Namespaces => &[("status.phase", "")],
            Resource::Services | Resource::EndpointSlices | Resource::NetworkPolicies => &[],
        }
    }
}

/// A fault injected into the next list or watch request of one resource. Faults queue: each
/// request takes at most one, in the order they were injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 410 Gone. A watch gets HTTP 200 and an `ERROR` event holding a 410 `Expired` Status, then
    /// the stream ends (what a real server does when the resourceVersion is too old); a list gets
    /// HTTP 410 with an `Expired` Status.
    Gone,
    /// HTTP 500 with an `InternalError` Status body.
    ServerError,
    /// The TCP connection closes mid-response: a list's body stops halfway through its declared
    /// Content-Length; a watch sends its headers and the first half of the bytes it would replay,
    /// then closes.
    DropConnection,
}

/// A fake Kubernetes API server on `127.0.0.1`; see the module documentation. It stops, closing
/// every connection, when dropped.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeApiServer {
    /// Binds `127.0.0.1:0` and starts serving on a thread of its own.
    ///
    /// # Panics
    /// If the socket cannot be bound or the runtime cannot be built.
    pub fn start() -> FakeApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        Self::serve_on(listener)
    }

    /// Like [`FakeApiServer::start`], but listening on `127.0.0.1` of network namespace `ns`
    /// (the socket is made there; this process stays where it is), so a client inside that
    /// namespace, such as an agent run with `ip netns exec`, reaches it.
    ///
    /// # Panics
    /// If the namespace cannot be entered or the socket cannot be bound.
    pub fn start_in_netns(ns: &str) -> FakeApiServer {
        let ns = ns.to_owned();
        let listener = std::thread::spawn(move || {
            kxdp_xdp::enter_netns(&ns).unwrap_or_else(|e| panic!("entering {ns}: {e}"));
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
        })
        .join()
        .expect("the binding thread");
        Self::serve_on(listener)
    }

    fn serve_on(listener: std::net::TcpListener) -> FakeApiServer {
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("listener address");
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(addr.port());
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(seed)),
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build the fake API server's runtime");
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fake-apiserver-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(accept_loop(listener, thread_shared, shutdown_rx));
                // Dropping the runtime here cancels every connection task, closing its socket.
            })
            .expect("spawn the fake API server's thread");
        FakeApiServer {
            shared,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client configuration that points kube at this server: plain HTTP, no authentication,
    /// namespace `default`, a short connect timeout and kube's usual read timeout (shorter read
    /// timeouts would cut idle watches).
    ///
    /// # Panics
    /// Never in practice: the URL is always well formed.
    pub fn kube_config(&self) -> kube::Config {
        let url = self.url().parse().expect("the server's URL is a valid URI");
        let mut config = kube::Config::new(url);
        config.connect_timeout = Some(Duration::from_secs(2));
        config
    }

    /// Creates or replaces an object. `object` is real Kubernetes JSON: `apiVersion` and `kind` of
    /// a served [`Resource`], `metadata.name`, and `metadata.namespace` exactly when the resource
    /// is namespaced. Sets `metadata.resourceVersion` to the next global version and fills
    /// `metadata.uid` and `metadata.creationTimestamp` when absent (a replaced object keeps its
    /// own). Every open watch that the object matches gets `ADDED` or `MODIFIED`.
    ///
    /// # Panics
    /// If the object is not one the server serves or lacks the metadata named above: a test bug.
    pub fn apply(&self, object: Value) {
        let (resource, key) = identify(&object).unwrap_or_else(|e| panic!("apply: {e}"));
        self.shared.lock().upsert(resource, key, object);
    }

    /// Deletes an object: every open watch that it matched gets `DELETED` with the object at a
    /// new resourceVersion.
    ///
    /// # Panics
    /// If there is no such object: a test bug.
    pub fn delete(&self, resource: Resource, namespace: Option<&str>, name: &str) {
        let key = (namespace.unwrap_or_default().to_owned(), name.to_owned());
        let mut store = self.shared.lock();
        if store.remove(resource, &key).is_none() {
            panic!("delete: no {} {:?}/{name}", resource.kind(), namespace);
        }
    }

    /// Caps the page size of lists that ask for one with `limit` (0 removes the cap). A list
    /// without `limit` is never paged, as on a real server.
    pub fn set_page_size(&self, n: usize) {
        self.shared.lock().page_size = n;
    }

    /// Queues a fault for the next list or watch request of `resource`.
    pub fn inject(&self, resource: Resource, fault: Fault) {
        self.shared
            .lock()
            .faults
            .entry(resource)
            .or_default()
            .push_back(fault);
    }

    /// Forgets every event so far, as a compaction does. The global resourceVersion moves on by
    /// one (in a real cluster it moves all the time through unrelated writes), so every version
    /// handed out before is now too old: a watch or `continue` from it, or an `Exact` list at it,
    /// gets 410 `Expired`. Open watches carry on.
    pub fn expire_history(&self) {
        let mut store = self.shared.lock();
        store.rv += 1;
        store.floor = store.rv;
        store.history.clear();
    }

    /// Sends a `BOOKMARK` event at the current resourceVersion (an object with only `kind`,
    /// `apiVersion` and `metadata.resourceVersion`) on every open watch that asked for
    /// `allowWatchBookmarks=true`.
    pub fn bookmark(&self) {
        let mut store = self.shared.lock();
        let rv = store.rv;
        store.prune_watches();
        for watch in store.watches.iter().filter(|w| w.bookmarks) {
            let line = bookmark_line(watch.resource, rv, false);
            let _ = watch.tx.send(WatchMsg::Line(line));
        }
    }

    /// Ends every open watch now, with no final event, as a real server does when it closes
    /// watches (restart, rebalance): the chunked body is terminated and the connection stays
    /// usable. Events already queued are delivered first. For a TCP-level cut use
    /// [`Fault::DropConnection`] or [`FakeApiServer::set_down`].
    pub fn close_watches(&self) {
        let mut store = self.shared.lock();
        for watch in store.watches.drain(..) {
            let _ = watch.tx.send(WatchMsg::End);
        }
    }

    /// While down, the server accepts connections and closes them at once, closes a kept-alive
    /// connection as soon as a request arrives on it, and cuts every open watch's connection.
    /// Requests that arrive while down are not logged.
    pub fn set_down(&self, down: bool) {
        let mut store = self.shared.lock();
        store.down = down;
        if down {
            for watch in store.watches.drain(..) {
                let _ = watch.tx.send(WatchMsg::Drop);
            }
        }
    }

    /// Every request served so far, in order, as `"METHOD /path?query"` with the query exactly
    /// as the client encoded it (e.g. `GET /api/v1/services?limit=500`).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// How many watches of `resource` are open now. A watch counts from the moment its request
    /// is logged in [`FakeApiServer::requests`] until its stream ends. Tests wait on this before
    /// acting on a watch that a watcher opens in the background.
    pub fn open_watches(&self, resource: Resource) -> usize {
        let mut store = self.shared.lock();
        store.prune_watches();
        store
            .watches
            .iter()
            .filter(|w| w.resource == resource)
            .count()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State

/// An object's key: namespace (empty for cluster-scoped objects) and name. Ordered as the real
/// server orders list items, by its storage key `namespace/name`.
type Key = (String, String);

struct Shared {
    store: Mutex<Store>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A test that panicked while holding the lock leaves consistent state: every mutation
        // completes before anything that can panic.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Deleted,
}

/// One remembered write: what a watch from an earlier version replays, and what a snapshot at
/// an earlier version undoes.
struct Event {
    rv: u64,
    resource: Resource,
    key: Key,
    change: Change,
    /// The object before the write (none for `Added`).
    before: Option<Value>,
    /// The object as the event carries it: the new object, or for `Deleted` the last state at the
    /// deletion's resourceVersion.
    object: Value,
}

enum WatchMsg {
    /// One event line, newline included.
    Line(Bytes),
    /// End the stream cleanly.
    End,
    /// Cut the connection.
    Drop,
}

struct OpenWatch {
    resource: Resource,
    filter: Filter,
    bookmarks: bool,
    /// The watch's starting version: a watch from a version ahead of the server's gets only
    /// the events after it, as a real server (which waits for that version) sends them.
    since: u64,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

struct Store {
    /// The last resourceVersion handed out.
    rv: u64,
    objects: [BTreeMap<Key, Value>; Resource::ALL.len()],
    /// Every write after `floor`, oldest first.
    history: Vec<Event>,
    /// The oldest resourceVersion a watch, continue token or exact list can start from.
    floor: u64,
    watches: Vec<OpenWatch>,
    page_size: usize,
    faults: HashMap<Resource, VecDeque<Fault>>,
    down: bool,
    requests: Vec<String>,
    uid_seed: u64,
    uids_issued: u64,
}

impl Store {
    fn new(uid_seed: u64) -> Store {
        Store {
            rv: 0,
            objects: Default::default(),
            history: Vec::new(),
            floor: 0,
            watches: Vec::new(),
            page_size: 0,
            faults: HashMap::new(),
            down: false,
            requests: Vec::new(),
            uid_seed,
            uids_issued: 0,
        }
    }

    fn objects(&self, resource: Resource) -> &BTreeMap<Key, Value> {
        &self.objects[resource.index()]
    }

    fn new_uid(&mut self) -> String {
        self.uids_issued += 1;
        let n = self.uids_issued;
        let s = self.uid_seed;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            s as u32,
            (s >> 32) as u16,
            (s >> 48) & 0xfff,
            (n >> 48) & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }

    /// Stores `object` under `key` at the next resourceVersion and notifies watches; returns the
    /// stored object.
    fn upsert(&mut self, resource: Resource, key: Key, mut object: Value) -> Value {
        let before = self.objects[resource.index()].get(&key).cloned();
        self.rv += 1;
        let rv = self.rv;
        let uid = match before.as_ref().and_then(|b| b.pointer("/metadata/uid")) {
            Some(uid) => uid.clone(),
            None => Value::String(self.new_uid()),
        };
        let created = match before
            .as_ref()
            .and_then(|b| b.pointer("/metadata/creationTimestamp"))
        {
            Some(ts) => ts.clone(),
            None => Value::String(rfc3339_now()),
        };
        let meta = metadata_mut(&mut object);
        meta.entry("uid").or_insert(uid);
        meta.entry("creationTimestamp").or_insert(created);
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        self.objects[resource.index()].insert(key.clone(), object.clone());
        let change = if before.is_some() {
            Change::Modified
        } else {
            Change::Added
        };
        self.record(Event {
            rv,
            resource,
            key,
            change,
            before,
            object: object.clone(),
        });
        object
    }

    /// Removes an object at the next resourceVersion and notifies watches.
    fn remove(&mut self, resource: Resource, key: &Key) -> Option<Value> {
        let before = self.objects[resource.index()].remove(key)?;
        self.rv += 1;
        let mut object = before.clone();
        set_resource_version(&mut object, self.rv);
        self.record(Event {
            rv: self.rv,
            resource,
            key: key.clone(),
            change: Change::Deleted,
            before: Some(before.clone()),
            object,
        });
        Some(before)
    }

    fn record(&mut self, event: Event) {
        self.prune_watches();
        for watch in self
            .watches
            .iter()
            .filter(|w| w.resource == event.resource && event.rv > w.since)
        {
            if let Some(line) = event_line_for(&watch.filter, &event) {
                let _ = watch.tx.send(WatchMsg::Line(line));
            }
        }
        self.history.push(event);
    }

    fn prune_watches(&mut self) {
        self.watches.retain(|w| !w.tx.is_closed());
    }

    /// The objects of `resource` as they were at `rv` (no older than `floor`).
    fn snapshot(&self, resource: Resource, rv: u64) -> BTreeMap<Key, Value> {
        let mut objects = self.objects(resource).clone();
        for event in self
            .history
            .iter()
            .rev()
            .take_while(|e| e.rv > rv)
            .filter(|e| e.resource == resource)
        {
            match &event.before {
                Some(before) => objects.insert(event.key.clone(), before.clone()),
                None => objects.remove(&event.key),
            };
        }
        objects
    }

    fn take_fault(&mut self, resource: Resource) -> Option<Fault> {
        self.faults.get_mut(&resource)?.pop_front()
    }
}

/// The line a watch with `filter` gets for `event`, if any: a change across the selector turns
/// into `ADDED` or `DELETED`, as in the real watch cache.
fn event_line_for(filter: &Filter, event: &Event) -> Option<Bytes> {
    let now = filter.matches(event.resource, &event.object);
    let was = event
        .before
        .as_ref()
        .is_some_and(|b| filter.matches(event.resource, b));
    match event.change {
        Change::Added if now => Some(event_line("ADDED", &event.object)),
        Change::Deleted if was => Some(event_line("DELETED", &event.object)),
        Change::Modified => match (was, now) {
            (true, true) => Some(event_line("MODIFIED", &event.object)),
            (false, true) => Some(event_line("ADDED", &event.object)),
            (true, false) => {
                let mut old = event.before.clone()?;
                set_resource_version(&mut old, event.rv);
                Some(event_line("DELETED", &old))
            }
            (false, false) => None,
        },
        Change::Added | Change::Deleted => None,
    }
}

/// One watch event line. Written by hand to keep the real server's field order, `type` first
/// (serde_json's map would sort `object` ahead of it).
fn event_line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(format!(r#"{{"type":"{kind}","object":{object}}}"#) + "\n")
}

fn bookmark_line(resource: Resource, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    event_line(
        "BOOKMARK",
        &json!({
            "kind": resource.kind(),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
        }),
    )
}

/// The resource and key of an object given to [`FakeApiServer::apply`].
fn identify(object: &Value) -> Result<(Resource, Key), String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = Resource::from_type(api_version, kind)
        .ok_or_else(|| format!("not a served apiVersion/kind: {api_version:?}/{kind:?}"))?;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{kind} without metadata.name"))?;
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    let namespace = match (resource.namespaced(), namespace) {
        (true, Some(ns)) if !ns.is_empty() => ns.to_owned(),
        (true, _) => return Err(format!("{kind} {name} without metadata.namespace")),
        (false, None) => String::new(),
        (false, Some(_)) => {
            return Err(format!(
                "{kind} {name} is cluster-scoped but has a namespace"
            ))
        }
    };
    Ok((resource, (namespace, name.to_owned())))
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let object = object
        .as_object_mut()
        .expect("stored objects are JSON objects");
    let meta = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
        .expect("metadata was just made an object")
}

fn set_resource_version(object: &mut Value, rv: u64) {
    metadata_mut(object).insert("resourceVersion".into(), Value::String(rv.to_string()));
}

/// Now as RFC 3339 in UTC with whole seconds, the form of `metadata.creationTimestamp`.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// Selectors

/// What a list or watch selects: the URL's namespace, `labelSelector` and `fieldSelector`.
struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

enum LabelRequirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

struct FieldRequirement {
    field: String,
    value: String,
    equal: bool,
}

impl Filter {
    fn new(
        resource: Resource,
        namespace: Option<String>,
        query: &Query,
    ) -> Result<Filter, ApiError> {
        Ok(Filter {
            namespace,
            labels: parse_label_selector(query.label_selector.as_deref().unwrap_or_default())?,
            fields: parse_field_selector(
                resource,
                query.field_selector.as_deref().unwrap_or_default(),
            )?,
        })
    }

    fn has_selectors(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }

    fn matches(&self, resource: Resource, object: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                != Some(ns)
            {
                return false;
            }
        }
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|req| match req {
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
            LabelRequirement::In(k, values) => {
                label(k).is_some_and(|v| values.iter().any(|x| x == v))
            }
            LabelRequirement::NotIn(k, values) => {
                label(k).is_none_or(|v| values.iter().all(|x| x != v))
            }
        });
        labels_match
            && self
                .fields
                .iter()
                .all(|req| (field_value(resource, object, &req.field) == req.value) == req.equal)
    }
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// Parses a label selector as the real server does: comma-separated requirements `key`,
/// `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`.
fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, ApiError> {
    let invalid =
        |why: &str| bad_request(format!("unable to parse requirement: {why}: {selector:?}"));
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| invalid("unbalanced ')'"))?
            }
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    let mut requirements = Vec::new();
    for part in parts.into_iter().map(str::trim) {
        if part.is_empty() {
            if selector.trim().is_empty() {
                continue;
            }
            return Err(invalid("empty requirement"));
        }
        let requirement = if let Some(key) = part.strip_prefix('!') {
            LabelRequirement::NotExists(label_key(key.trim()).ok_or_else(|| invalid("bad key"))?)
        } else if let Some((key, value)) = part.split_once("!=") {
            LabelRequirement::NotIn(
                label_key(key.trim()).ok_or_else(|| invalid("bad key"))?,
                vec![label_value(value.trim()).ok_or_else(|| invalid("bad value"))?],
            )
        } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            LabelRequirement::In(
                label_key(key.trim()).ok_or_else(|| invalid("bad key"))?,
                vec![label_value(value.trim()).ok_or_else(|| invalid("bad value"))?],
            )
        } else if let Some((key, rest)) = part.split_once(char::is_whitespace) {
            let key = label_key(key).ok_or_else(|| invalid("bad key"))?;
            let rest = rest.trim_start();
            let (negated, set) = if let Some(set) = rest.strip_prefix("notin") {
                (true, set)
            } else if let Some(set) = rest.strip_prefix("in") {
                (false, set)
            } else {
                return Err(invalid("expected 'in' or 'notin'"));
            };
            let set = set
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| invalid("expected a parenthesized set"))?;
            let values = set
                .split(',')
                .map(|v| label_value(v.trim()).ok_or_else(|| invalid("bad value")))
                .collect::<Result<Vec<_>, _>>()?;
            if negated {
                LabelRequirement::NotIn(key, values)
            } else {
                LabelRequirement::In(key, values)
            }
        } else {
            LabelRequirement::Exists(label_key(part).ok_or_else(|| invalid("bad key"))?)
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

fn label_key(key: &str) -> Option<String> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    valid.then(|| key.to_owned())
}

fn label_value(value: &str) -> Option<String> {
    let valid = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    valid.then(|| value.to_owned())
}

/// Parses a field selector: comma-separated `field=value`, `field==value`, `field!=value` over
/// the fields the real server supports for `resource`.
fn parse_field_selector(
    resource: Resource,
    selector: &str,
) -> Result<Vec<FieldRequirement>, ApiError> {
    let mut requirements = Vec::new();
    for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (f, v, true)
        } else {
            return Err(bad_request(format!(
                "invalid field selector: invalid selector: '{selector}'; can't understand '{part}'"
            )));
        };
        let field = field.trim();
        let supported = matches!(field, "metadata.name" | "metadata.namespace")
            || resource.extra_fields().iter().any(|(f, _)| *f == field);
        if !supported {
            return Err(bad_request(format!("field label not supported: {field}")));
        }
        requirements.push(FieldRequirement {
            field: field.to_owned(),
            value: value.trim().to_owned(),
            equal,
        });
    }
    Ok(requirements)
}

fn field_value(resource: Resource, object: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    let default = resource
        .extra_fields()
        .iter()
        .find(|(f, _)| *f == field)
        .map_or("", |(_, d)| d);
    match object.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => default.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

type Body = BoxBody<Bytes, io::Error>;

/// An error answered as a `Status` object.
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn expired(message: String) -> ApiError {
        ApiError::new(StatusCode::GONE, "Expired", message)
    }

    fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "Internal error occurred: injected fault".to_owned(),
        )
    }

    fn not_found_path() -> ApiError {
        ApiError {
            details: Some(json!({})),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".to_owned(),
            )
        }
    }

    fn not_found(resource: Resource, name: &str) -> ApiError {
        let mut details = json!({ "name": name, "kind": resource.plural() });
        if let Some((group, _)) = resource.api_version().split_once('/') {
            details["group"] = json!(group);
        }
        ApiError {
            details: Some(details),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} \"{name}\" not found", resource.qualified_plural()),
            )
        }
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    fn response(&self) -> Response<Body> {
        json_response(self.code, &self.status())
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    json_bytes_response(code, Bytes::from(value.to_string()))
}

fn json_bytes_response(code: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(bytes).map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A response whose body stops halfway through its declared length and then cuts the
/// connection.
fn truncated(mut full: Response<Body>, bytes: Bytes) -> Response<Body> {
    let half = bytes.slice(..bytes.len() / 2);
    let stream =
        futures::stream::iter([Ok(Frame::data(half))]).chain(futures::stream::once(async {
            // Give hyper a moment to flush the half before the error aborts the connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(dropped())
        }));
    full.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    *full.body_mut() = BodyExt::boxed(StreamBody::new(stream));
    full
}

fn dropped() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "fault injected: connection dropped",
    )
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => panic!("fake API server: cannot register the listener: {e}"),
    };
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        if shared.lock().down {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| serve(Arc::clone(&shared), req));
            // Errors here are connections cut by the client, by a fault or by `set_down`.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Serves one request. An `Err` makes hyper close the connection without answering: that is
/// how a server that is down behaves on a kept-alive connection.
async fn serve(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let mut store = shared.lock();
    if store.down {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "API server is down",
        ));
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    store
        .requests
        .push(format!("{} {path_and_query}", parts.method));
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let response = route(
        &mut store,
        &parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or_default(),
        content_type,
        &body,
    );
    Ok(response.unwrap_or_else(|e| e.response()))
}

/// What a URL names.
struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_version, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    let resource = Resource::from_path(&group_version, plural)?;
    let scoped_right = match (resource.namespaced(), namespace, name) {
        (false, Some(_), _) => false,
        // A namespaced object is only addressed inside its namespace.
        (true, None, Some(_)) => false,
        _ => true,
    };
    if !scoped_right || namespace.is_some_and(str::is_empty) || name.is_some_and(str::is_empty) {
        return None;
    }
    Some(Target {
        resource,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    })
}

/// The query parameters of a list or watch.
#[derive(Default)]
struct Query {
    watch: bool,
    resource_version: Option<String>,
    resource_version_match: Option<String>,
    allow_watch_bookmarks: bool,
    send_initial_events: bool,
    timeout_seconds: Option<u64>,
    limit: Option<usize>,
    continue_token: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
}

fn parse_query(query: &str) -> Result<Query, ApiError> {
    let flag = |v: &str| v == "true" || v == "1";
    let mut q = Query::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "watch" => q.watch = flag(&value),
            "resourceVersion" => q.resource_version = Some(value),
            "resourceVersionMatch" => q.resource_version_match = Some(value),
            "allowWatchBookmarks" => q.allow_watch_bookmarks = flag(&value),
            "sendInitialEvents" => q.send_initial_events = flag(&value),
            "timeoutSeconds" => {
                q.timeout_seconds = Some(
                    value
                        .parse()
                        .map_err(|_| bad_request(format!("invalid timeoutSeconds {value:?}")))?,
                );
            }
            "limit" => {
                q.limit = Some(
                    value
                        .parse()
                        .map_err(|_| bad_request(format!("invalid limit {value:?}")))?,
                );
            }
            "continue" => q.continue_token = Some(value).filter(|v| !v.is_empty()),
            "labelSelector" => q.label_selector = Some(value),
            "fieldSelector" => q.field_selector = Some(value),
            _ => {}
        }
    }
    Ok(q)
}

fn route(
    store: &mut Store,
    method: &Method,
    path: &str,
    query: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    if path == "/version" && method == Method::GET {
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "major": "1",
                "minor": "34",
                "gitVersion": "v1.34.0-kxdp-fake",
                "platform": "linux/amd64",
            }),
        ));
    }
    let target = parse_target(path).ok_or_else(ApiError::not_found_path)?;
    match (method, target.name.as_deref()) {
        (&Method::GET, None) => {
            let query = parse_query(query)?;
            if query.watch {
                watch(store, &target, &query)
            } else {
                list(store, &target, &query)
            }
        }
        (&Method::GET, Some(name)) => {
            let object = store
                .objects(target.resource)
                .get(&key_of(&target, name))
                .ok_or_else(|| ApiError::not_found(target.resource, name))?;
            Ok(json_response(StatusCode::OK, object))
        }
        (&Method::PATCH, Some(name)) => patch(store, &target, name, content_type, body),
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )),
    }
}

fn key_of(target: &Target, name: &str) -> Key {
    (
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    )
}

fn parse_rv(rv: &str) -> Result<u64, ApiError> {
    rv.parse()
        .map_err(|_| bad_request(format!("invalid resource version: {rv:?}")))
}

fn too_old(rv: u64, floor: u64) -> String {
    format!("too old resource version: {rv} ({floor})")
}

/// A continue token in the real server's format: base64 of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<last key>\u0000"}`.
fn encode_continue(rv: u64, last: &Key) -> String {
    let start = if last.0.is_empty() {
        format!("{}\u{0}", last.1)
    } else {
        format!("{}/{}\u{0}", last.0, last.1)
    };
    let token = json!({ "v": "meta.k8s.io/v1", "rv": rv, "start": start });
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(resource: Resource, token: &str) -> Option<(u64, Key)> {
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .ok()?;
    let token: Value = serde_json::from_slice(&bytes).ok()?;
    let rv = token["rv"].as_u64()?;
    let start = token["start"].as_str()?.strip_suffix('\u{0}')?;
    let key = if resource.namespaced() {
        let (ns, name) = start.split_once('/')?;
        (ns.to_owned(), name.to_owned())
    } else {
        (String::new(), start.to_owned())
    };
    Some((rv, key))
}

/// An object as a list item: a real server leaves the type (`kind`, `apiVersion`) out.
/// Serialized from the stored object, without copying it.
struct ListItem<'a>(&'a Value);

impl serde::Serialize for ListItem<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(fields) = self.0.as_object() else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(None)?;
        for (k, v) in fields {
            if k != "kind" && k != "apiVersion" {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

fn list(store: &mut Store, target: &Target, query: &Query) -> Result<Response<Body>, ApiError> {
    let resource = target.resource;
    let filter = Filter::new(resource, target.namespace.clone(), query)?;
    let fault = store.take_fault(resource);
    match fault {
        Some(Fault::Gone) => {
            return Err(ApiError::expired(if query.continue_token.is_some() {
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter."
                    .to_owned()
            } else {
                too_old(store.floor.saturating_sub(1), store.floor)
            }));
        }
        Some(Fault::ServerError) => return Err(ApiError::internal()),
        Some(Fault::DropConnection) | None => {}
    }

    // Which snapshot, and where in it, this page starts.
    let (snapshot_rv, after) = if let Some(token) = &query.continue_token {
        let (rv, after) = decode_continue(resource, token)
            .ok_or_else(|| bad_request("continue key is not valid".to_owned()))?;
        if rv < store.floor {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter."
                    .to_owned(),
            ));
        }
        (rv, Some(after))
    } else {
        match query.resource_version.as_deref() {
            None | Some("" | "0") => (store.rv, None),
            Some(rv) => {
                let rv = parse_rv(rv)?;
                if rv > store.rv {
                    return Err(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "Timeout",
                        format!("Too large resource version: {rv}, current: {}", store.rv),
                    ));
                }
                // Legacy semantics: a non-zero version with a limit and no match is exact.
                let exact = match query.resource_version_match.as_deref() {
                    Some("Exact") => true,
                    Some(_) => false,
                    None => query.limit.is_some_and(|l| l > 0),
                };
                if !exact {
                    (store.rv, None)
                } else if rv < store.floor {
                    return Err(ApiError::expired(too_old(rv, store.floor)));
                } else {
                    (rv, None)
                }
            }
        }
    };

    // The current objects are only read: no copy (a copy per page made a 10k-object list
    // quadratic). An older snapshot is rebuilt from history.
    let objects: std::borrow::Cow<'_, BTreeMap<Key, Value>> = if snapshot_rv == store.rv {
        std::borrow::Cow::Borrowed(store.objects(resource))
    } else {
        std::borrow::Cow::Owned(store.snapshot(resource, snapshot_rv))
    };
    let matching: Vec<(&Key, &Value)> = objects
        .iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|a| *key > a))
        .filter(|(_, object)| filter.matches(resource, object))
        .collect();
    let page_size = match query.limit.filter(|l| *l > 0) {
        Some(limit) if store.page_size > 0 => Some(limit.min(store.page_size)),
        limit => limit,
    };
    let mut metadata = json!({ "resourceVersion": snapshot_rv.to_string() });
    let shown = match page_size {
        Some(size) if matching.len() > size => {
            metadata["continue"] = json!(encode_continue(snapshot_rv, matching[size - 1].0));
            if !filter.has_selectors() {
                metadata["remainingItemCount"] = json!(matching.len() - size);
            }
            &matching[..size]
        }
        _ => &matching[..],
    };
    let items: Vec<ListItem<'_>> = shown.iter().map(|(_, object)| ListItem(object)).collect();
    let items = serde_json::to_string(&items).map_err(|_| ApiError::internal())?;
    // Written by hand to keep the real server's field order.
    let list = Bytes::from(format!(
        r#"{{"kind":"{}List","apiVersion":"{}","metadata":{metadata},"items":{items}}}"#,
        resource.kind(),
        resource.api_version(),
    ));
    if fault == Some(Fault::DropConnection) {
        return Ok(truncated(
            json_bytes_response(StatusCode::OK, Bytes::new()),
            list,
        ));
    }
    Ok(json_bytes_response(StatusCode::OK, list))
}

fn watch(store: &mut Store, target: &Target, query: &Query) -> Result<Response<Body>, ApiError> {
    let resource = target.resource;
    let filter = Filter::new(resource, target.namespace.clone(), query)?;
    let fault = store.take_fault(resource);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut lines: Vec<Bytes> = Vec::new();
    // Whether the stream ends after `lines` instead of going on with new events.
    let mut ends = false;
    let mut since = 0;
    match fault {
        Some(Fault::ServerError) => return Err(ApiError::internal()),
        Some(Fault::Gone) => {
            let rv = query.resource_version.as_deref().unwrap_or("0");
            let error = ApiError::expired(format!("too old resource version: {rv} ({})", store.rv));
            lines.push(event_line("ERROR", &error.status()));
            ends = true;
        }
        Some(Fault::DropConnection) | None => {}
    }
    if !ends {
        match query.resource_version.as_deref() {
            None | Some("" | "0") => {
                // Start at the current state: a synthetic ADDED for each object.
                for object in store.objects(resource).values() {
                    if filter.matches(resource, object) {
                        lines.push(event_line("ADDED", object));
                    }
                }
                if query.send_initial_events && query.allow_watch_bookmarks {
                    lines.push(bookmark_line(resource, store.rv, true));
                }
            }
            Some(rv) => {
                let rv = parse_rv(rv)?;
                since = rv;
                if rv < store.floor {
                    let error = ApiError::expired(too_old(rv, store.floor));
                    lines.push(event_line("ERROR", &error.status()));
                    ends = true;
                } else {
                    lines.extend(
                        store
                            .history
                            .iter()
                            .filter(|e| e.rv > rv && e.resource == resource)
                            .filter_map(|e| event_line_for(&filter, e)),
                    );
                }
            }
        }
    }
    if fault == Some(Fault::DropConnection) {
        let all: Vec<u8> = lines.concat();
        let half = Bytes::copy_from_slice(&all[..all.len() / 2]);
        if !half.is_empty() {
            let _ = tx.send(WatchMsg::Line(half));
        }
        let _ = tx.send(WatchMsg::Drop);
    } else {
        for line in lines {
            let _ = tx.send(WatchMsg::Line(line));
        }
        if ends {
            let _ = tx.send(WatchMsg::End);
        } else {
            store.watches.push(OpenWatch {
                resource,
                filter,
                bookmarks: query.allow_watch_bookmarks,
                since,
                tx,
            });
        }
    }
    let timeout = query
        .timeout_seconds
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let mut response = Response::new(watch_body(rx, timeout));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// A watch's chunked body: the lines sent on `rx`, until `End`, `timeout` or a `Drop` (which
/// cuts the connection).
fn watch_body(rx: mpsc::UnboundedReceiver<WatchMsg>, timeout: Option<Duration>) -> Body {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let stream = futures::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        let next = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, rx.recv()).await.ok()?,
            None => rx.recv().await,
        };
        match next? {
            WatchMsg::Line(line) => Some((Ok(Frame::data(line)), Some(rx))),
            WatchMsg::End => None,
            WatchMsg::Drop => {
                // Let hyper flush what was sent before the error aborts the connection.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Err(dropped()), None))
            }
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// Applies a merge patch (RFC 7386) to `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target
        .as_object_mut()
        .expect("target was just made an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn patch(
    store: &mut Store,
    target: &Target,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let resource = target.resource;
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !matches!(
        media_type,
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({media_type:?}) - accepted \
                 media types include: application/merge-patch+json, \
                 application/strategic-merge-patch+json"
            ),
        ));
    }
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("error decoding patch: {e}")))?;
    let key = key_of(target, name);
    let current = store
        .objects(resource)
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    if let Some(wanted) = patch.pointer("/metadata/resourceVersion") {
        if Some(wanted) != current.pointer("/metadata/resourceVersion") {
            return Err(ApiError {
                details: Some(json!({ "name": name, "kind": resource.plural() })),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been \
                         modified; please apply your changes to the latest version and try again",
                        resource.qualified_plural()
                    ),
                )
            });
        }
    }
    let mut patched = current.clone();
    merge_patch(&mut patched, &patch);
    // The identity of an object is not the patch's to change.
    patched["kind"] = json!(resource.kind());
    patched["apiVersion"] = json!(resource.api_version());
    let meta = metadata_mut(&mut patched);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "resourceVersion",
    ] {
        match current.pointer(&format!("/metadata/{field}")) {
            Some(value) => meta.insert(field.to_owned(), value.clone()),
            None => meta.remove(field),
        };
    }
    if patched == current {
        // A no-op patch writes nothing, as on a real server: same resourceVersion, no event.
        return Ok(json_response(StatusCode::OK, &current));
    }
    let stored = store.upsert(resource, key, patched);
    Ok(json_response(StatusCode::OK, &stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let key = ("default".to_owned(), "web".to_owned());
        let token = encode_continue(7, &key);
        assert_eq!(decode_continue(Resource::Pods, &token), Some((7, key)));
        let node = (String::new(), "n1".to_owned());
        let token = encode_continue(3, &node);
        assert_eq!(decode_continue(Resource::Nodes, &token), Some((3, node)));
    }

    #[test]
    fn label_selectors_parse_and_match() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let matches = |s: &str| {
            let filter = Filter {
                namespace: None,
                labels: parse_label_selector(s).expect("valid selector"),
                fields: Vec::new(),
            };
            filter.matches(Resource::Pods, &obj)
        };
        assert!(matches(""));
        assert!(matches("app"));
        assert!(!matches("!app"));
        assert!(matches("!missing"));
        assert!(matches("app=web"));
        assert!(matches("app==web,tier=front"));
        assert!(!matches("app!=web"));
        assert!(matches("missing!=x"));
        assert!(matches("app in (db, web)"));
        assert!(!matches("app notin (db,web)"));
        assert!(matches("app in (web),tier notin (back)"));
        assert!(parse_label_selector("app=(").is_err());
        assert!(parse_label_selector("app in web").is_err());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let ts = rfc3339_now();
        assert_eq!(ts.len(), 20, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    }

    #[test]
    fn merge_patch_sets_and_removes() {
        let mut target = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}});
        merge_patch(
            &mut target,
            &json!({"metadata": {"annotations": {"a": null, "c": "3"}}}),
        );
        assert_eq!(
            target,
            json!({"metadata": {"annotations": {"b": "2", "c": "3"}}})
        );
    }
}
