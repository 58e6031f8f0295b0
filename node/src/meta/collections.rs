//! Collections of a database as the meta state records them: the shard key (fixed once set)
//! and the secondary indexes declared on each. The indexes themselves live in the shards,
//! created there by a replicated command (see `store::indexes`).

use std::collections::BTreeMap;

use flotilla_query::{IndexDef, Path};
use serde::{Deserialize, Serialize};

use super::{DatabaseRecord, MetaError, MetaOutcome, MetaState};

/// A declared collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// JSON pointer whose value places each document; `None`: placed by id.
    pub shard_key: Option<String>,
    /// Secondary indexes: name -> paths of the (compound) key.
    pub indexes: BTreeMap<String, Vec<String>>,
}

/// Most paths of a compound index.
pub const MAX_INDEX_PATHS: usize = 8;
/// Most indexes per collection.
pub const MAX_INDEXES: usize = 32;

impl DatabaseRecord {
    pub fn collection(&self, name: &str) -> Option<&CollectionRecord> {
        self.collections.get(name)
    }

    /// The shard key of `collection`, when it has one.
    pub fn shard_key(&self, collection: &str) -> Option<Path> {
        self.collections
            .get(collection)
            .and_then(|c| c.shard_key.as_deref())
            .and_then(|k| Path::parse(k).ok())
    }

    /// The indexes declared on `collection`, for the planner.
    pub fn index_defs(&self, collection: &str) -> Vec<IndexDef> {
        let Some(c) = self.collections.get(collection) else {
            return Vec::new();
        };
        c.indexes
            .iter()
            .filter_map(|(name, paths)| {
                let paths = paths
                    .iter()
                    .map(|p| Path::parse(p).ok())
                    .collect::<Option<Vec<_>>>()?;
                Some(IndexDef {
                    name: name.clone(),
                    paths,
                })
            })
            .collect()
    }
}

/// Checks the paths of an index: JSON pointers naming a field, at most [`MAX_INDEX_PATHS`],
/// none twice.
pub fn check_index_paths(paths: &[String]) -> Result<(), String> {
    if paths.is_empty() {
        return Err("an index needs at least one path".into());
    }
    if paths.len() > MAX_INDEX_PATHS {
        return Err(format!("an index has at most {MAX_INDEX_PATHS} paths"));
    }
    for (i, p) in paths.iter().enumerate() {
        Path::parse(p).map_err(|e| format!("path {p:?}: {e}"))?;
        if paths[..i].contains(p) {
            return Err(format!("path {p:?} appears twice"));
        }
    }
    Ok(())
}

impl MetaState {
    pub(super) fn create_collection(
        &mut self,
        database: &str,
        collection: &str,
        shard_key: &Option<String>,
    ) -> Result<MetaOutcome, MetaError> {
        let db = self.database_mut(database)?;
        match db.collections.get(collection) {
            Some(c) if &c.shard_key == shard_key => Ok(MetaOutcome::Unchanged),
            Some(c) => Err(MetaError::ShardKeyFixed {
                collection: collection.to_string(),
                current: c
                    .shard_key
                    .clone()
                    .unwrap_or_else(|| "the document id".into()),
            }),
            None => {
                db.collections.insert(
                    collection.to_string(),
                    CollectionRecord {
                        shard_key: shard_key.clone(),
                        indexes: BTreeMap::new(),
                    },
                );
                Ok(MetaOutcome::Done)
            }
        }
    }

    pub(super) fn create_index(
        &mut self,
        database: &str,
        collection: &str,
        name: &str,
        paths: &[String],
    ) -> Result<MetaOutcome, MetaError> {
        check_index_paths(paths).map_err(MetaError::InvalidIndex)?;
        let db = self.database_mut(database)?;
        let c = db.collections.entry(collection.to_string()).or_default();
        match c.indexes.get(name) {
            Some(existing) if existing.as_slice() == paths => Ok(MetaOutcome::Unchanged),
            Some(existing) => Err(MetaError::InvalidIndex(format!(
                "index {name} of {collection} exists on {} already",
                existing.join(",")
            ))),
            None if c.indexes.len() >= MAX_INDEXES => Err(MetaError::InvalidIndex(format!(
                "a collection has at most {MAX_INDEXES} indexes"
            ))),
            None => {
                c.indexes.insert(name.to_string(), paths.to_vec());
                Ok(MetaOutcome::Done)
            }
        }
    }

    pub(super) fn drop_index(
        &mut self,
        database: &str,
        collection: &str,
        name: &str,
    ) -> Result<MetaOutcome, MetaError> {
        let db = self.database_mut(database)?;
        match db
            .collections
            .get_mut(collection)
            .and_then(|c| c.indexes.remove(name))
        {
            Some(_) => Ok(MetaOutcome::Done),
            None => Ok(MetaOutcome::Unchanged),
        }
    }

    fn database_mut(&mut self, name: &str) -> Result<&mut DatabaseRecord, MetaError> {
        self.databases
            .get_mut(name)
            .ok_or_else(|| MetaError::DatabaseNotFound(name.to_string()))
    }
}
