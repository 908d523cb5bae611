//! The fake API server speaks the list/watch protocol well enough for the real kube-rs client and
//! `kube::runtime::watcher`: paging, watch events, bookmarks, 410 relists, retried 500s, resumed
//! connections, selectors, and the Node annotation patches the agent publishes. Every test is
//! bounded in time and needs no privileges.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use kxdp_tests::apiserver::{FakeApiServer, Fault, Resource};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// How long any one step may take. The watcher's default backoff waits 0.8 to 1.6 s after the
/// first error, so a step that recovers from one error fits well inside.
const BOUND: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {BOUND:?}: {what}"))
}

/// Waits until `condition` holds, polling.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    bounded(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn client(server: &FakeApiServer) -> Client {
    Client::try_from(server.kube_config()).expect("a kube client for the fake server")
}

fn service(namespace: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace, "labels": labels },
        "spec": { "clusterIP": "10.96.0.10", "ports": [{ "port": 80, "protocol": "TCP" }] },
    })
}

fn pod(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "nodeName": node, "containers": [{ "name": "app", "image": "app:1" }] },
        "status": { "phase": "Running", "podIP": "10.244.1.5" },
    })
}

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } },
        "spec": { "podCIDR": "10.244.1.0/24" },
    })
}

fn key<K: ResourceExt>(object: &K) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|n| (*n).to_owned()).collect()
}

/// The requests for the collection at `path`: lists (`watch == false`) or watches.
fn collection_requests(server: &FakeApiServer, path: &str, watch: bool) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| {
            let target = r.strip_prefix("GET ").unwrap_or_default();
            target.split('?').next() == Some(path) && target.contains("watch=true") == watch
        })
        .collect()
}

/// The value of `param` in a logged request.
fn query_param(request: &str, param: &str) -> Option<String> {
    let query = request.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{param}=")))
        .map(str::to_owned)
}

/// Collects the events of a raw watch until `n` have arrived.
async fn next_events<K>(
    stream: &mut (impl Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
    n: usize,
) -> Vec<WatchEvent<K>> {
    let mut events = Vec::new();
    while events.len() < n {
        let event = bounded("a watch event", stream.next())
            .await
            .expect("the watch ended early")
            .expect("a watch event, not an error");
        events.push(event);
    }
    events
}

/// A `kube::runtime::watcher` with the default backoff, run in the background, and the set of
/// objects it says exist, kept the way a reflector keeps its store.
struct Mirror<K> {
    events: mpsc::UnboundedReceiver<watcher::Result<Event<K>>>,
    task: tokio::task::JoinHandle<()>,
    /// `namespace/name` of every object the watcher says exists.
    objects: BTreeSet<String>,
    /// The objects of a list in progress, swapped in at `InitDone`.
    relist: Option<BTreeSet<String>>,
    /// Every error the watcher reported, as text.
    errors: Vec<String>,
    /// How many initial lists (or streaming lists) completed.
    inits_done: usize,
}

impl<K> Mirror<K>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    fn start(api: Api<K>, config: watcher::Config) -> Mirror<K> {
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
            while let Some(event) = stream.next().await {
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Mirror {
            events,
            task,
            objects: BTreeSet::new(),
            relist: None,
            errors: Vec::new(),
            inits_done: 0,
        }
    }

    fn absorb(&mut self, event: watcher::Result<Event<K>>) {
        match event {
            Ok(Event::Init) => self.relist = Some(BTreeSet::new()),
            Ok(Event::InitApply(object)) => {
                self.relist
                    .get_or_insert_with(BTreeSet::new)
                    .insert(key(&object));
            }
            Ok(Event::InitDone) => {
                self.objects = self.relist.take().unwrap_or_default();
                self.inits_done += 1;
            }
            Ok(Event::Apply(object)) => {
                self.objects.insert(key(&object));
            }
            Ok(Event::Delete(object)) => {
                self.objects.remove(&key(&object));
            }
            Err(error) => self.errors.push(error.to_string()),
        }
    }

    /// Feeds watcher events in until `done` holds.
    async fn until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        bounded(what, async {
            while !done(self) {
                let event = self.events.recv().await.expect("the watcher task ended");
                self.absorb(event);
            }
        })
        .await;
    }
}

/// A mirror of every Service, once it has listed them and its watch is open.
async fn watching_services(server: &FakeApiServer) -> Mirror<Service> {
    let mut mirror = Mirror::start(
        Api::<Service>::all(client(server)),
        watcher::Config::default(),
    );
    mirror
        .until("the initial list", |m| m.inits_done == 1)
        .await;
    eventually("the watch opens", || {
        server.open_watches(Resource::Services) == 1
    })
    .await;
    mirror
}

impl<K> Drop for Mirror<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn paged_list_returns_every_object_with_continue_tokens() {
    let server = FakeApiServer::start();
    server.set_page_size(2);
    for i in 0..5 {
        server.apply(service("default", &format!("s{i}"), json!({})));
    }
    let api: Api<Service> = Api::all(client(&server));
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut lp = ListParams::default().limit(10);
    loop {
        let page = bounded("a list page", api.list(&lp)).await.expect("a page");
        pages.push(page.metadata.clone());
        seen.extend(page.items.iter().map(key));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["s0", "s1", "s2", "s3", "s4"].map(|n| format!("default/{n}"))
    );
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].remaining_item_count, Some(3));
    // Every page shows the same snapshot.
    assert!(pages
        .iter()
        .all(|p| p.resource_version.as_deref() == Some("5")));
    let lists = collection_requests(&server, "/api/v1/services", false);
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(lists[0].contains("limit=10") && !lists[0].contains("continue="));
    assert!(
        lists[1..].iter().all(|r| r.contains("continue=")),
        "{lists:?}"
    );

    // The watcher pages the same way: its limit=500 is capped to 2.
    let mut mirror = Mirror::start(api, watcher::Config::default());
    mirror
        .until("the watcher's paged initial list", |m| m.inits_done == 1)
        .await;
    assert_eq!(mirror.objects.len(), 5);
    let lists = collection_requests(&server, "/api/v1/services", false);
    assert_eq!(lists.len(), 6, "{lists:?}");
    assert!(lists[3].contains("limit=500"));
    assert_eq!(
        lists[3..]
            .iter()
            .filter(|r| r.contains("continue="))
            .count(),
        2
    );
}

#[tokio::test]
async fn list_items_carry_no_type_as_on_a_real_server() {
    let server = FakeApiServer::start();
    server.apply(service("default", "web", json!({ "app": "web" })));
    let client = client(&server);
    let request = hyper::Request::get("/api/v1/services")
        .body(Vec::new())
        .expect("a request");
    let text = bounded("a raw list", client.request_text(request))
        .await
        .expect("a list");
    let list: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["metadata"]["resourceVersion"], "1");
    assert!(list["items"][0].get("kind").is_none(), "{text}");
    assert!(list["items"][0].get("apiVersion").is_none(), "{text}");
    let metadata = &list["items"][0]["metadata"];
    assert!(metadata["uid"].is_string() && metadata["creationTimestamp"].is_string());

    // kube's typed list copes with the missing types.
    let api: Api<Service> = Api::all(client);
    let services = bounded("a typed list", api.list(&ListParams::default()))
        .await
        .expect("a list");
    assert_eq!(services.items.len(), 1);
    assert_eq!(services.items[0].labels()["app"], "web");
    // A single object does carry its type.
    let one = bounded(
        "a get",
        Api::<Service>::default_namespaced(api.into_client()).get("web"),
    )
    .await
    .expect("the service");
    assert_eq!(one.resource_version().as_deref(), Some("1"));
}

#[tokio::test]
async fn continued_lists_show_one_snapshot_until_it_expires() {
    let server = FakeApiServer::start();
    for i in 0..4 {
        server.apply(service("default", &format!("s{i}"), json!({})));
    }
    let api: Api<Service> = Api::all(client(&server));
    let first = bounded("page 1", api.list(&ListParams::default().limit(2)))
        .await
        .expect("page 1");
    let token = first.metadata.continue_.clone().expect("a continue token");
    server.delete(Resource::Services, Some("default"), "s3");
    server.apply(service("default", "s4", json!({})));
    let second = bounded(
        "page 2",
        api.list(&ListParams::default().limit(2).continue_token(&token)),
    )
    .await
    .expect("page 2");
    let keys: Vec<String> = second.items.iter().map(key).collect();
    assert_eq!(keys, ["default/s2", "default/s3"], "the snapshot at page 1");
    assert_eq!(second.metadata.resource_version.as_deref(), Some("4"));

    server.expire_history();
    let error = bounded(
        "an expired continue",
        api.list(&ListParams::default().limit(2).continue_token(&token)),
    )
    .await
    .expect_err("an expired continue token fails");
    match error {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected a 410 Status, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_streams_added_modified_deleted() {
    let server = FakeApiServer::start();
    server.apply(service("default", "old", json!({})));
    let api: Api<Service> = Api::all(client(&server));
    let list = bounded("a list", api.list(&ListParams::default()))
        .await
        .expect("a list");
    let rv = list.metadata.resource_version.expect("a list version");
    let mut stream = bounded("a watch", api.watch(&WatchParams::default(), &rv))
        .await
        .expect("a watch")
        .boxed();
    server.apply(service("default", "web", json!({})));
    server.apply(service("default", "web", json!({ "app": "web" })));
    server.delete(Resource::Services, Some("default"), "web");
    let events = next_events(&mut stream, 3).await;
    let versions: Vec<(String, String)> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(s) => ("ADDED".to_owned(), s.resource_version().unwrap_or_default()),
            WatchEvent::Modified(s) => {
                assert_eq!(s.labels()["app"], "web");
                (
                    "MODIFIED".to_owned(),
                    s.resource_version().unwrap_or_default(),
                )
            }
            WatchEvent::Deleted(s) => (
                "DELETED".to_owned(),
                s.resource_version().unwrap_or_default(),
            ),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        versions,
        [("ADDED", "2"), ("MODIFIED", "3"), ("DELETED", "4")]
            .map(|(t, v)| (t.to_owned(), v.to_owned()))
    );
    let watches = collection_requests(&server, "/api/v1/services", true);
    assert_eq!(
        query_param(&watches[0], "timeoutSeconds").as_deref(),
        Some("290")
    );
    assert_eq!(
        query_param(&watches[0], "allowWatchBookmarks").as_deref(),
        Some("true")
    );
}

#[tokio::test]
async fn watch_replays_history_and_expires_old_versions() {
    let server = FakeApiServer::start();
    for name in ["a", "b", "c"] {
        server.apply(service("default", name, json!({})));
    }
    let api: Api<Service> = Api::all(client(&server));

    // From version 1: the events after it.
    let mut stream = bounded("a watch from 1", api.watch(&WatchParams::default(), "1"))
        .await
        .expect("a watch")
        .boxed();
    let replayed: Vec<String> = next_events(&mut stream, 2)
        .await
        .iter()
        .map(|e| match e {
            WatchEvent::Added(s) => s.name_any(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(replayed, ["b", "c"]);

    // From "0": the current state as synthetic ADDED events.
    let mut stream = bounded("a watch from 0", api.watch(&WatchParams::default(), "0"))
        .await
        .expect("a watch")
        .boxed();
    assert_eq!(next_events(&mut stream, 3).await.len(), 3);

    // From a version older than the history: one 410 ERROR event, then the end.
    server.expire_history();
    let mut stream = bounded("a watch from 3", api.watch(&WatchParams::default(), "3"))
        .await
        .expect("a watch, answered with 200")
        .boxed();
    match next_events(&mut stream, 1).await.remove(0) {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    assert!(bounded("the end of the stream", stream.next())
        .await
        .is_none());
}

#[tokio::test]
async fn watches_get_bookmarks_only_when_they_ask() {
    let server = FakeApiServer::start();
    server.apply(service("default", "web", json!({})));
    let api: Api<Service> = Api::all(client(&server));
    let mut with = bounded("a watch", api.watch(&WatchParams::default(), "1"))
        .await
        .expect("a watch")
        .boxed();
    let mut without = bounded(
        "a watch",
        api.watch(&WatchParams::default().disable_bookmarks(), "1"),
    )
    .await
    .expect("a watch")
    .boxed();
    server.apply(node("n1"));
    server.bookmark();
    server.apply(service("default", "db", json!({})));
    match next_events(&mut with, 1).await.remove(0) {
        WatchEvent::Bookmark(bookmark) => {
            assert_eq!(bookmark.metadata.resource_version, "2");
            assert_eq!(bookmark.types.kind, "Service");
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    match next_events(&mut without, 1).await.remove(0) {
        WatchEvent::Added(service) => assert_eq!(service.name_any(), "db"),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_resumes_from_a_bookmark() {
    let server = FakeApiServer::start();
    server.apply(service("default", "web", json!({})));
    let client = client(&server);
    let mut mirror = watching_services(&server).await;

    // A write elsewhere moves the global version on; only the bookmark tells the watcher.
    server.apply(node("n1"));
    let version = bounded("the node", Api::<Node>::all(client).get("n1"))
        .await
        .expect("the node")
        .resource_version()
        .expect("a version");
    server.bookmark();
    server.close_watches();
    eventually("the watcher watches again", || {
        collection_requests(&server, "/api/v1/services", true).len() == 2
    })
    .await;
    let watches = collection_requests(&server, "/api/v1/services", true);
    assert_eq!(
        query_param(&watches[0], "resourceVersion").as_deref(),
        Some("1")
    );
    assert_eq!(
        query_param(&watches[1], "resourceVersion"),
        Some(version),
        "the watcher resumes from the bookmark's version: {watches:?}"
    );
    assert_eq!(
        collection_requests(&server, "/api/v1/services", false).len(),
        1
    );
    server.apply(service("default", "db", json!({})));
    mirror
        .until("db arrives", |m| m.objects.contains("default/db"))
        .await;
    assert!(
        mirror.errors.is_empty(),
        "a clean end is no error: {:?}",
        mirror.errors
    );
}

#[tokio::test]
async fn watcher_relists_after_history_expires() {
    let server = FakeApiServer::start();
    server.apply(service("default", "s1", json!({})));
    server.apply(service("default", "s2", json!({})));
    let mut mirror = watching_services(&server).await;

    server.delete(Resource::Services, Some("default"), "s1");
    server.apply(service("default", "s3", json!({})));
    server.expire_history();
    server.close_watches();
    mirror.until("a relist", |m| m.inits_done == 2).await;
    assert_eq!(mirror.objects, names(&["default/s2", "default/s3"]));
    assert!(
        mirror
            .errors
            .iter()
            .any(|e| e.contains("410") || e.contains("too old")),
        "the watcher reports the expired watch: {:?}",
        mirror.errors
    );
    let lists = collection_requests(&server, "/api/v1/services", false);
    assert_eq!(lists.len(), 2, "a second list: {lists:?}");
    // The relist asks for the most recent state: no resourceVersion, no continue.
    assert_eq!(query_param(&lists[1], "resourceVersion"), None);
    assert_eq!(query_param(&lists[1], "continue"), None);

    // And it watches on from the relist.
    server.apply(service("default", "s4", json!({})));
    mirror
        .until("s4 arrives", |m| m.objects.contains("default/s4"))
        .await;
}

#[tokio::test]
async fn watcher_retries_a_failed_list() {
    let server = FakeApiServer::start();
    server.apply(service("default", "web", json!({})));
    server.inject(Resource::Services, Fault::ServerError);
    let mut mirror = Mirror::start(
        Api::<Service>::all(client(&server)),
        watcher::Config::default(),
    );
    mirror
        .until("the list succeeds", |m| m.inits_done == 1)
        .await;
    assert_eq!(mirror.objects, names(&["default/web"]));
    assert_eq!(mirror.errors.len(), 1, "{:?}", mirror.errors);
    assert!(
        mirror.errors[0].contains("Internal error"),
        "{:?}",
        mirror.errors
    );
    assert_eq!(
        collection_requests(&server, "/api/v1/services", false).len(),
        2
    );
}

#[tokio::test]
async fn injected_gone_and_dropped_list_fail_once() {
    let server = FakeApiServer::start();
    server.apply(pod("p1", "n1"));
    let api: Api<Pod> = Api::all(client(&server));

    server.inject(Resource::Pods, Fault::Gone);
    match bounded("a list", api.list(&ListParams::default())).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    server.inject(Resource::Pods, Fault::Gone);
    let mut stream = bounded("a watch", api.watch(&WatchParams::default(), "0"))
        .await
        .expect("a watch, answered with 200")
        .boxed();
    match next_events(&mut stream, 1).await.remove(0) {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    assert!(bounded("the end of the stream", stream.next())
        .await
        .is_none());

    server.inject(Resource::Pods, Fault::DropConnection);
    let error = bounded("a list", api.list(&ListParams::default()))
        .await
        .expect_err("a list cut short fails");
    assert!(!matches!(error, kube::Error::Api(_)), "{error:?}");
    // The fault is spent: the next list works.
    let list = bounded("a list", api.list(&ListParams::default()))
        .await
        .expect("a list");
    assert_eq!(list.items.len(), 1);
}

#[tokio::test]
async fn dropped_watch_connection_cuts_the_stream() {
    let server = FakeApiServer::start();
    for name in ["a", "b", "c", "d"] {
        server.apply(service("default", name, json!({})));
    }
    server.inject(Resource::Services, Fault::DropConnection);
    let api: Api<Service> = Api::all(client(&server));
    let mut stream = bounded("a watch", api.watch(&WatchParams::default(), "0"))
        .await
        .expect("the headers arrive")
        .boxed();
    let mut events = 0;
    let mut errors = 0;
    bounded("the cut stream ends", async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => events += 1,
                Err(_) => errors += 1,
            }
        }
    })
    .await;
    assert!(
        (1..4).contains(&events),
        "part of the replay arrives: {events}"
    );
    assert_eq!(errors, 1, "the cut shows as an error");
}

#[tokio::test]
async fn watcher_resumes_a_dropped_watch_without_relisting() {
    let server = FakeApiServer::start();
    server.apply(service("default", "s1", json!({})));
    let mut mirror = watching_services(&server).await;

    server.inject(Resource::Services, Fault::DropConnection);
    server.close_watches();
    server.apply(service("default", "s2", json!({})));
    server.apply(service("default", "s3", json!({})));
    mirror
        .until("s2 and s3 arrive", |m| m.objects.len() == 3)
        .await;
    assert_eq!(
        mirror.objects,
        names(&["default/s1", "default/s2", "default/s3"])
    );
    assert!(!mirror.errors.is_empty(), "the cut is reported");
    assert_eq!(mirror.inits_done, 1, "no relist");
    assert_eq!(
        collection_requests(&server, "/api/v1/services", false).len(),
        1
    );
    let watches = collection_requests(&server, "/api/v1/services", true);
    assert!(watches.len() >= 3, "{watches:?}");
    // Each watch resumes from the last event the watcher saw: the listed version, or an event
    // that arrived whole before the cut.
    let versions: Vec<u64> = watches
        .iter()
        .map(|w| {
            query_param(w, "resourceVersion")
                .and_then(|v| v.parse().ok())
                .expect("a resumed watch names its version")
        })
        .collect();
    assert_eq!(versions[0], 1, "{watches:?}");
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{watches:?}");
}

#[tokio::test]
async fn watcher_rides_out_an_outage() {
    let server = FakeApiServer::start();
    server.apply(service("default", "s1", json!({})));
    server.apply(service("default", "s2", json!({})));
    let mut mirror = watching_services(&server).await;

    server.set_down(true);
    mirror
        .until("the outage is noticed", |m| !m.errors.is_empty())
        .await;
    // What changes while the server is away, and a compaction, force a relist.
    server.delete(Resource::Services, Some("default"), "s1");
    server.apply(service("default", "s3", json!({})));
    server.expire_history();
    server.set_down(false);
    mirror.until("a relist", |m| m.inits_done == 2).await;
    assert_eq!(mirror.objects, names(&["default/s2", "default/s3"]));
}

#[tokio::test]
async fn selectors_filter_lists_and_watches() {
    let server = FakeApiServer::start();
    server.apply(service(
        "default",
        "web",
        json!({ "app": "web", "tier": "front" }),
    ));
    server.apply(service("default", "db", json!({ "app": "db" })));
    server.apply(service("default", "plain", json!({})));
    server.apply(service("other", "web2", json!({ "app": "web" })));
    let client = client(&server);
    let api: Api<Service> = Api::all(client.clone());
    let list_names = |lp: ListParams| {
        let api = api.clone();
        async move {
            let list = bounded("a list", api.list(&lp)).await.expect("a list");
            list.items.iter().map(key).collect::<BTreeSet<_>>()
        }
    };
    let labels = |s: &str| ListParams::default().labels(s);
    assert_eq!(
        list_names(labels("app=web")).await,
        names(&["default/web", "other/web2"])
    );
    assert_eq!(
        list_names(labels("app==web,tier=front")).await,
        names(&["default/web"])
    );
    assert_eq!(
        list_names(labels("app!=web")).await,
        names(&["default/db", "default/plain"])
    );
    assert_eq!(list_names(labels("!app")).await, names(&["default/plain"]));
    assert_eq!(
        list_names(labels("app")).await,
        names(&["default/db", "default/web", "other/web2"])
    );
    assert_eq!(
        list_names(labels("app in (db,web),app notin (web)")).await,
        names(&["default/db"])
    );
    assert_eq!(
        list_names(ListParams::default().fields("metadata.namespace=other")).await,
        names(&["other/web2"])
    );
    assert_eq!(
        list_names(ListParams::default().fields("metadata.name!=web,metadata.namespace=default"))
            .await,
        names(&["default/db", "default/plain"])
    );
    let in_other: Api<Service> = Api::namespaced(client.clone(), "other");
    let list = bounded("a namespaced list", in_other.list(&ListParams::default()))
        .await
        .expect("a list");
    assert_eq!(
        list.items.iter().map(key).collect::<Vec<_>>(),
        ["other/web2"]
    );
    for bad in [
        labels("app in web"),
        ListParams::default().fields("spec.bogus=x"),
    ] {
        match bounded("a bad selector", api.list(&bad)).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 400, "{status:?}"),
            other => panic!("expected 400, got {other:?}"),
        }
    }

    // A watch follows objects across its selector.
    let mut stream = bounded(
        "a selected watch",
        api.watch(&WatchParams::default().labels("app=web"), "4"),
    )
    .await
    .expect("a watch")
    .boxed();
    server.apply(service("default", "db", json!({ "app": "web" })));
    server.apply(service("default", "web", json!({ "app": "api" })));
    server.apply(service("default", "plain", json!({ "x": "y" })));
    server.apply(service("default", "db", json!({ "app": "web", "v": "2" })));
    let events: Vec<String> = next_events(&mut stream, 3)
        .await
        .iter()
        .map(|e| match e {
            WatchEvent::Added(s) => format!("ADDED {}", s.name_any()),
            WatchEvent::Modified(s) => format!("MODIFIED {}", s.name_any()),
            WatchEvent::Deleted(s) => format!(
                "DELETED {} app={} rv={}",
                s.name_any(),
                s.labels()["app"],
                s.resource_version().unwrap_or_default()
            ),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        events,
        ["ADDED db", "DELETED web app=web rv=6", "MODIFIED db"]
    );

    // A watcher selecting pods by node sees only that node's pods.
    server.apply(pod("p1", "n1"));
    server.apply(pod("p2", "n2"));
    let mut mirror = Mirror::start(
        Api::<Pod>::all(client),
        watcher::Config::default().fields("spec.nodeName=n1"),
    );
    mirror
        .until("the initial list", |m| m.inits_done == 1)
        .await;
    assert_eq!(mirror.objects, names(&["default/p1"]));
    eventually("the watch opens", || {
        server.open_watches(Resource::Pods) == 1
    })
    .await;
    server.apply(pod("p3", "n2"));
    server.apply(pod("p4", "n1"));
    mirror
        .until("p4 arrives", |m| m.objects.contains("default/p4"))
        .await;
    assert_eq!(mirror.objects, names(&["default/p1", "default/p4"]));
    let pod_lists = collection_requests(&server, "/api/v1/pods", false);
    assert_eq!(
        query_param(&pod_lists[0], "fieldSelector").as_deref(),
        Some("spec.nodeName%3Dn1")
    );
}

#[tokio::test]
async fn node_annotations_are_patched_and_watched() {
    let server = FakeApiServer::start();
    server.apply(node("n1"));
    let api: Api<Node> = Api::all(client(&server));
    let before = bounded("a get", api.get("n1")).await.expect("the node");
    assert_eq!(before.resource_version().as_deref(), Some("1"));
    match bounded("a get", api.get("missing")).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
            assert_eq!(status.message, "nodes \"missing\" not found");
        }
        other => panic!("expected 404, got {other:?}"),
    }
    let mut stream = bounded("a watch", api.watch(&WatchParams::default(), "1"))
        .await
        .expect("a watch")
        .boxed();

    let pp = PatchParams::default();
    let merged = bounded(
        "a merge patch",
        api.patch(
            "n1",
            &pp,
            &Patch::Merge(json!({ "metadata": { "annotations": { "kxdp.io/a": "1" } } })),
        ),
    )
    .await
    .expect("a patched node");
    assert_eq!(merged.annotations()["kxdp.io/a"], "1");
    assert_eq!(merged.resource_version().as_deref(), Some("2"));
    assert_eq!(merged.metadata.uid, before.metadata.uid);
    assert_eq!(merged.labels()["kubernetes.io/hostname"], "n1");

    let strategic = bounded(
        "a strategic merge patch",
        api.patch(
            "n1",
            &pp,
            &Patch::Strategic(json!({
                "metadata": { "annotations": { "kxdp.io/a": null, "kxdp.io/b": "2" } }
            })),
        ),
    )
    .await
    .expect("a patched node");
    let annotations: Vec<&String> = strategic.annotations().keys().collect();
    assert_eq!(annotations, ["kxdp.io/b"]);
    assert_eq!(strategic.resource_version().as_deref(), Some("3"));

    // Patching to what is already there writes nothing.
    let same = bounded(
        "a no-op patch",
        api.patch(
            "n1",
            &pp,
            &Patch::Merge(json!({ "metadata": { "annotations": { "kxdp.io/b": "2" } } })),
        ),
    )
    .await
    .expect("the node");
    assert_eq!(same.resource_version().as_deref(), Some("3"));

    let events = next_events(&mut stream, 2).await;
    let seen: Vec<(String, Vec<String>)> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Modified(n) => (
                n.resource_version().unwrap_or_default(),
                n.annotations().keys().cloned().collect(),
            ),
            other => panic!("expected MODIFIED, got {other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("2".to_owned(), vec!["kxdp.io/a".to_owned()]),
            ("3".to_owned(), vec!["kxdp.io/b".to_owned()])
        ]
    );

    // Server-side apply is not served.
    match bounded(
        "an apply patch",
        api.patch(
            "n1",
            &PatchParams::apply("kxdp"),
            &Patch::Apply(json!({ "apiVersion": "v1", "kind": "Node" })),
        ),
    )
    .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 415),
        other => panic!("expected 415, got {other:?}"),
    }
    // A stale resourceVersion in the patch conflicts.
    match bounded(
        "a stale patch",
        api.patch(
            "n1",
            &pp,
            &Patch::Merge(
                json!({ "metadata": { "resourceVersion": "1", "labels": { "x": "y" } } }),
            ),
        ),
    )
    .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409),
        other => panic!("expected 409, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_timeout_is_honoured() {
    let server = FakeApiServer::start();
    server.apply(node("n1"));
    let api: Api<Node> = Api::all(client(&server));
    let started = Instant::now();
    let mut stream = bounded(
        "a watch",
        api.watch(&WatchParams::default().timeout(1), "1"),
    )
    .await
    .expect("a watch")
    .boxed();
    assert!(bounded("the watch times out", stream.next())
        .await
        .is_none());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(server.open_watches(Resource::Nodes), 0);
}

#[tokio::test]
async fn streaming_list_ends_with_an_initial_events_bookmark() {
    let server = FakeApiServer::start();
    server.apply(node("n1"));
    server.apply(node("n2"));
    let mut mirror = Mirror::start(
        Api::<Node>::all(client(&server)),
        watcher::Config::default().streaming_lists(),
    );
    mirror
        .until("the streamed list", |m| m.inits_done == 1)
        .await;
    assert_eq!(mirror.objects, names(&["/n1", "/n2"]));
    server.apply(node("n3"));
    mirror
        .until("n3 arrives", |m| m.objects.contains("/n3"))
        .await;
    assert!(collection_requests(&server, "/api/v1/nodes", false).is_empty());
    let watches = collection_requests(&server, "/api/v1/nodes", true);
    assert_eq!(
        query_param(&watches[0], "sendInitialEvents").as_deref(),
        Some("true")
    );
}

#[tokio::test]
async fn endpoint_slices_are_served_under_their_group() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let server = FakeApiServer::start();
    server.apply(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc12",
            "namespace": "default",
            "labels": { "kubernetes.io/service-name": "web" },
        },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["10.244.1.5"], "conditions": { "ready": true } }],
        "ports": [{ "port": 8080, "protocol": "TCP" }],
    }));
    let client = client(&server);
    let all: Api<EndpointSlice> = Api::all(client.clone());
    let lp = ListParams::default().labels("kubernetes.io/service-name=web");
    let list = bounded("a list", all.list(&lp)).await.expect("a list");
    assert_eq!(list.items[0].endpoints[0].addresses, ["10.244.1.5"]);
    let namespaced: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let one = bounded("a get", namespaced.get("web-abc12"))
        .await
        .expect("the slice");
    assert_eq!(one.address_type, "IPv4");
    match bounded(
        "a get",
        Api::<EndpointSlice>::namespaced(client, "default").get("nope"),
    )
    .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(
            status.message,
            "endpointslices.discovery.k8s.io \"nope\" not found"
        ),
        other => panic!("expected 404, got {other:?}"),
    }
    assert!(server
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /apis/discovery.k8s.io/v1/endpointslices?")));
}

#[tokio::test]
async fn unknown_paths_get_a_404_status() {
    let server = FakeApiServer::start();
    let client = client(&server);
    for path in [
        "/api/v1/widgets",
        "/api/v1/namespaces/default/nodes",
        "/api/v1/pods/p1",
        "/healthz/nothing",
    ] {
        let request = hyper::Request::get(path)
            .body(Vec::new())
            .expect("a request");
        match bounded("a request", client.request_text(request)).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(
                    (status.code, status.reason.as_str()),
                    (404, "NotFound"),
                    "{path}"
                );
            }
            other => panic!("{path}: expected 404, got {other:?}"),
        }
    }
    let version = bounded("the version", client.apiserver_version())
        .await
        .expect("a version");
    assert_eq!(version.major, "1");
}

#[test]
fn usable_from_synchronous_code_and_stops_on_drop() {
    let server = FakeApiServer::start();
    server.apply(node("n1"));
    server.delete(Resource::Nodes, None, "n1");
    assert!(server.requests().is_empty());
    assert!(server.url().starts_with("http://127.0.0.1:"));
    let addr = server
        .url()
        .trim_start_matches("http://")
        .parse::<std::net::SocketAddr>()
        .expect("an address");
    std::net::TcpStream::connect(addr).expect("the server listens");
    drop(server);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens after drop"
    );
}
