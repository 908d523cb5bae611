//! The manifest source: the cluster model from Kubernetes YAML files (Services,
//! EndpointSlices, Nodes, Pods, Namespaces and `networking.k8s.io/v1` NetworkPolicies; several
//! documents per file, `List` objects too), optionally re-read when they change. Manifests list
//! the pods of every node, so they are the policies' peers as well (no [`Kind::PeerPod`]).
//!
//! A load is all or nothing: bad YAML, an object that does not decode, or a value kxdp cannot
//! use fails the whole load with an error naming the file, the document, the object and the
//! field, and the model keeps what the last good load put there. Documents of other kinds
//! (Deployments, ConfigMaps…) are skipped, so a whole application's manifests can be given.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::model::{Kind, Model, Object, ObjectError};

/// Why manifests could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// A document is not YAML, or not a Kubernetes object.
    #[error("{file}: document {doc}: {problem}")]
    Document {
        /// The file.
        file: String,
        /// The document's number in the file, from 1.
        doc: usize,
        /// What is wrong.
        problem: String,
    },
    /// An object does not decode as its kind: names the field.
    #[error("{file}: document {doc}: {object}: {field}: {problem}")]
    Field {
        /// The file.
        file: String,
        /// The document's number in the file, from 1.
        doc: usize,
        /// `Kind namespace/name`.
        object: String,
        /// The field's path.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// An object decodes but holds a value kxdp cannot use.
    #[error("{file}: {source}")]
    Object {
        /// The file.
        file: String,
        /// The object and field.
        source: ObjectError,
    },
}

/// Decode one object of a kind kxdp reads, naming the field that fails.
fn decode<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    file: &str,
    doc: usize,
    object: &str,
) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| ManifestError::Field {
        file: file.to_owned(),
        doc,
        object: object.to_owned(),
        field: e.path().to_string(),
        problem: e.inner().to_string(),
    })
}

/// The embedded default cluster (`control/manifests/default.yaml`): what `kxdp trace` uses
/// when no manifest is given.
pub const DEFAULT_MANIFEST: &str = include_str!("../manifests/default.yaml");

/// The objects in one file's text (`file` names it in errors).
pub fn parse(file: &str, text: &str) -> Result<Vec<(usize, Object)>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc_no = i + 1;
        let bad = |problem: String| ManifestError::Document {
            file: file.to_owned(),
            doc: doc_no,
            problem,
        };
        let value = serde_json::Value::deserialize(doc).map_err(|e| bad(e.to_string()))?;
        if value.is_null() {
            continue; // an empty document (`---` at the end)
        }
        collect(file, doc_no, value, &mut out)?;
    }
    Ok(out)
}

fn collect(
    file: &str,
    doc: usize,
    value: serde_json::Value,
    out: &mut Vec<(usize, Object)>,
) -> Result<(), ManifestError> {
    let bad = |problem: String| ManifestError::Document {
        file: file.to_owned(),
        doc,
        problem,
    };
    let text =
        |v: &serde_json::Value, f: &str| v.get(f).and_then(|x| x.as_str()).map(str::to_owned);
    let Some(kind) = text(&value, "kind") else {
        return Err(bad("not a Kubernetes object: no `kind`".into()));
    };
    let api = text(&value, "apiVersion").unwrap_or_default();
    let meta = value.get("metadata");
    let name = meta.and_then(|m| text(m, "name")).unwrap_or_default();
    let cluster_scoped = matches!(kind.as_str(), "Node" | "Namespace" | "List");
    let object = match meta.and_then(|m| text(m, "namespace")) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None if cluster_scoped => format!("{kind} {name}"),
        // Where kubectl would put it.
        None => format!("{kind} default/{name}"),
    };
    let namespaced = |mut v: serde_json::Value| {
        // Objects in a manifest without a namespace go to "default", as kubectl puts them.
        if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.entry("namespace").or_insert("default".into());
        }
        v
    };
    let o = match (api.as_str(), kind.as_str()) {
        (_, "List") => {
            let items = match value.get("items") {
                Some(serde_json::Value::Array(items)) => items.clone(),
                _ => return Err(bad("a List without `items`".into())),
            };
            for item in items {
                collect(file, doc, item, out)?;
            }
            return Ok(());
        }
        ("v1", "Service") => Object::Service(decode(namespaced(value), file, doc, &object)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(decode(namespaced(value), file, doc, &object)?)
        }
        ("v1", "Node") => Object::Node(decode(value, file, doc, &object)?),
        ("v1", "Pod") => Object::Pod(decode(namespaced(value), file, doc, &object)?),
        ("v1", "Namespace") => Object::Namespace(decode(value, file, doc, &object)?),
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            Object::NetworkPolicy(decode(namespaced(value), file, doc, &object)?)
        }
        _ => return Ok(()),
    };
    if name.is_empty() {
        return Err(ManifestError::Field {
            file: file.to_owned(),
            doc,
            object,
            field: "metadata.name".into(),
            problem: "missing".into(),
        });
    }
    out.push((doc, o));
    Ok(())
}

/// Manifest files and what they last said.
#[derive(Debug)]
pub struct ManifestSource {
    paths: Vec<PathBuf>,
    seen: Vec<Option<(SystemTime, u64)>>,
}

impl ManifestSource {
    /// A source reading `paths` (files, in order).
    pub fn new(paths: Vec<PathBuf>) -> ManifestSource {
        let seen = vec![None; paths.len()];
        ManifestSource { paths, seen }
    }

    /// Whether any file changed (modification time or size) since the last load, good or bad:
    /// files that failed to load are not worth reading again until they change.
    pub fn changed(&self) -> bool {
        self.paths
            .iter()
            .zip(&self.seen)
            .any(|(p, seen)| stamp(p) != *seen)
    }

    /// Read every file and make `model` say exactly what they say. On any error the model is
    /// left as it was. Returns whether the model has changes to compile.
    pub fn load(&mut self, model: &mut Model) -> Result<bool, ManifestError> {
        // Stamped before reading: a file written meanwhile reads as changed next time.
        self.seen = self.paths.iter().map(|p| stamp(p)).collect();
        self.load_all(model)
    }

    fn load_all(&self, model: &mut Model) -> Result<bool, ManifestError> {
        let mut objects = Vec::new();
        for p in &self.paths {
            let file = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|source| ManifestError::Read {
                file: file.clone(),
                source,
            })?;
            for (_, o) in parse(&file, &text)? {
                objects.push((file.clone(), o));
            }
        }
        // Convert everything into a scratch model first: all or nothing.
        let mut scratch = Model::new();
        for (file, o) in &objects {
            scratch.apply(o).map_err(|source| ManifestError::Object {
                file: file.clone(),
                source,
            })?;
        }
        let all: Vec<Object> = objects.into_iter().map(|(_, o)| o).collect();
        for kind in [
            Kind::Node,
            Kind::Pod,
            Kind::Service,
            Kind::EndpointSlice,
            Kind::Namespace,
            Kind::NetworkPolicy,
        ] {
            let errors = model.replace_kind(kind, &all);
            debug_assert!(errors.is_empty(), "converted once already: {errors:?}");
        }
        Ok(!model.is_clean())
    }
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}
