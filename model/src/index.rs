//! [`IndexCheck`]: one secondary index of a replica, compared with a rebuild from the
//! replica's documents (`Admin.CheckIndexes`).

use flotilla_proto::v1 as pb;

/// One index of a replica, compared with a rebuild from the replica's documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexCheck {
    pub collection: String,
    pub name: String,
    /// False while it is built on the replica (then nothing is compared).
    pub ready: bool,
    /// Entries it holds.
    pub entries: u64,
    /// Entries a rebuild gives that it lacks.
    pub missing: u64,
    /// Entries it holds that a rebuild does not give.
    pub extra: u64,
}

impl IndexCheck {
    /// Built, and equal to its rebuild.
    pub fn exact(&self) -> bool {
        self.ready && self.missing == 0 && self.extra == 0
    }
}

impl From<pb::IndexCheck> for IndexCheck {
    fn from(c: pb::IndexCheck) -> Self {
        IndexCheck {
            collection: c.collection,
            name: c.name,
            ready: c.ready,
            entries: c.entries,
            missing: c.missing,
            extra: c.extra,
        }
    }
}

impl From<IndexCheck> for pb::IndexCheck {
    fn from(c: IndexCheck) -> Self {
        pb::IndexCheck {
            collection: c.collection,
            name: c.name,
            ready: c.ready,
            entries: c.entries,
            missing: c.missing,
            extra: c.extra,
        }
    }
}
