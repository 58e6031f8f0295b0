//! Reading a shard for a backup, and loading one for a restore, from one node, with the
//! client's TLS settings and credentials.

use flotilla_proto::v1 as pb;
use flotilla_proto::v1::backup_client::BackupClient;

use super::{Client, Kind};
use crate::error::{Result, classify};

/// A consistent cut of a database begun by [`Client::begin_cut`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Names the cut.
    pub id: u64,
    /// Per shard, in shard order: the log index where the cut's fence went up.
    pub fence_indexes: Vec<u64>,
}

impl Cut {
    /// What [`Client::read_shard_at`] takes for shard `shard` (`None` past the shards).
    pub fn at(&self, shard: u32) -> Option<(u64, u64)> {
        self.fence_indexes
            .get(shard as usize)
            .map(|index| (self.id, *index))
    }
}

/// Largest chunk of a shard's stream accepted.
const MAX_CHUNK_BYTES: usize = 64 << 20;

impl Client {
    /// Streams every document of shard `shard` of `database` from the node at `addr` (a
    /// client address of a node holding a replica of the shard), as its Backup service reads
    /// it: one revision of the shard, read after a read index its leader confirmed. The call
    /// goes to that node alone (no failover: the caller chose it), over TLS when the client
    /// uses it, carrying the client's token.
    pub async fn read_shard(
        &self,
        addr: &str,
        database: &str,
        shard: u32,
    ) -> Result<tonic::Streaming<pb::ShardChunk>> {
        self.read_shard_at(addr, database, shard, None).await
    }

    /// [`Client::read_shard`] within a cut begun by [`Client::begin_cut`] (`cut`: the cut and
    /// this shard's fence index): the node also waits for the fence and reads the shard only
    /// while the fence is up ([`Error::CutLifted`] otherwise: begin a new cut). Every stream's
    /// first chunk, sent once the read is open, carries the shard's pending transaction
    /// intents and records; lift the cut with [`Client::end_cut`] once every shard's stream
    /// has sent it.
    ///
    /// [`Error::CutLifted`]: crate::Error::CutLifted
    pub async fn read_shard_at(
        &self,
        addr: &str,
        database: &str,
        shard: u32,
        cut: Option<(u64, u64)>,
    ) -> Result<tonic::Streaming<pb::ShardChunk>> {
        let channel = self.backup_channel(addr).await?;
        let failed = |status: tonic::Status| classify(&status, addr).0;
        let mut node = BackupClient::new(channel).max_decoding_message_size(MAX_CHUNK_BYTES);
        let (cut, fence_index) = cut.unwrap_or((0, 0));
        let request = pb::ReadShardRequest {
            database: database.to_string(),
            shard,
            cut,
            fence_index,
        };
        Ok(node.read_shard(request).await.map_err(failed)?.into_inner())
    }

    /// Begins a consistent cut of every shard of `database`: raises its fence on every shard
    /// (transaction commits wait while it is up) and answers once every shard applied it.
    /// Needs the cluster administrator's role. Lift it with [`Client::end_cut`] as soon as the
    /// reads are open; a shard leader lifts a fence left up longer than its
    /// `--backup-fence-max`.
    pub async fn begin_cut(&self, database: &str) -> Result<Cut> {
        let req = pb::BeginCutRequest {
            database: database.to_string(),
        };
        let r = self
            // Not repeated when its outcome is unknown: a fence raised by a lost attempt is
            // lifted by its shard leaders after --backup-fence-max.
            .call(Kind::Once, |ch, timeout| {
                let req = req.clone();
                async move {
                    let mut request = tonic::Request::new(req);
                    request.set_timeout(timeout);
                    BackupClient::new(ch).begin_cut(request).await
                }
            })
            .await?;
        Ok(Cut {
            id: r.cut,
            fence_indexes: r.fence_indexes,
        })
    }

    /// Lifts cut `cut` of `database` on every shard (lifting it again is harmless, so the
    /// call is retried on any node).
    pub async fn end_cut(&self, database: &str, cut: u64) -> Result<()> {
        let req = pb::EndCutRequest {
            database: database.to_string(),
            cut,
        };
        // Repeatable as a read is: lifting twice is lifting once.
        self.call(Kind::Read, |ch, timeout| {
            let req = req.clone();
            async move {
                let mut request = tonic::Request::new(req);
                request.set_timeout(timeout);
                BackupClient::new(ch).end_cut(request).await
            }
        })
        .await?;
        Ok(())
    }

    /// Loads `documents` (each with its version) into shard `shard` of `database`, a database
    /// being restored, at the node at `addr` (the shard's leader; another node answers
    /// `Unavailable`). Documents loaded before with the same version and body are skipped, so
    /// a load may be repeated. `finish` ends the shard's restore. Needs the cluster
    /// administrator's role. `shard_keys` names the shard key each collection is expected to
    /// have ("" for placement by id): a node that has not seen that declaration yet answers
    /// `Unavailable` (retry). Returns the documents written.
    pub async fn load_shard(
        &self,
        addr: &str,
        database: &str,
        shard: u32,
        documents: Vec<pb::BackupDocument>,
        finish: bool,
        shard_keys: &std::collections::HashMap<String, String>,
    ) -> Result<u64> {
        let channel = self.backup_channel(addr).await?;
        let failed = |status: tonic::Status| classify(&status, addr).0;
        let mut node = BackupClient::new(channel).max_encoding_message_size(MAX_CHUNK_BYTES);
        let mut request = tonic::Request::new(pb::LoadShardRequest {
            database: database.to_string(),
            shard,
            documents,
            finish,
            shard_keys: shard_keys.clone(),
        });
        request.set_timeout(self.inner.options.request_timeout);
        Ok(node
            .load_shard(request)
            .await
            .map_err(failed)?
            .into_inner()
            .loaded)
    }

    /// Streams the changes of shard `shard` of `database` in revisions (`after`, `to`] from
    /// the node at `addr` (a client address of a node holding a replica of the shard), for an
    /// incremental backup; `to` 0 reads up to a read index the shard leader confirms now
    /// (every chunk names the revision read up to). Needs the cluster administrator's role.
    /// [`crate::Error::RevisionCompacted`] when that replica's feed no longer reaches back
    /// to `after + 1`. The call goes to that node alone (no failover).
    pub async fn read_changes(
        &self,
        addr: &str,
        database: &str,
        shard: u32,
        after: u64,
        to: u64,
    ) -> Result<tonic::Streaming<pb::ChangesChunk>> {
        let channel = self.backup_channel(addr).await?;
        let failed = |status: tonic::Status| classify(&status, addr).0;
        let mut node = BackupClient::new(channel).max_decoding_message_size(MAX_CHUNK_BYTES);
        let request = pb::ReadChangesRequest {
            database: database.to_string(),
            shard,
            after_revision: after,
            to_revision: to,
        };
        Ok(node
            .read_changes(request)
            .await
            .map_err(failed)?
            .into_inner())
    }

    /// A channel to the node at `addr` with the client's credentials ready.
    async fn backup_channel(&self, addr: &str) -> Result<crate::auth::AuthChannel> {
        let options = &self.inner.options;
        let channel = self.inner.endpoints.channel_to(addr, options)?;
        self.inner
            .auth
            .ready(channel.clone(), options.request_timeout)
            .await
            .map_err(|status| classify(&status, addr).0)?;
        Ok(channel)
    }
}
