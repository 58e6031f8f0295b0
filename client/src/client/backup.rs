//! Reading a shard for a backup, and loading one for a restore, from one node, with the
//! client's TLS settings and credentials.

use flotilla_proto::v1 as pb;
use flotilla_proto::v1::backup_client::BackupClient;

use super::Client;
use crate::error::{Result, classify};

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
        let channel = self.backup_channel(addr).await?;
        let failed = |status: tonic::Status| classify(&status, addr).0;
        let mut node = BackupClient::new(channel).max_decoding_message_size(MAX_CHUNK_BYTES);
        let request = pb::ReadShardRequest {
            database: database.to_string(),
            shard,
        };
        Ok(node.read_shard(request).await.map_err(failed)?.into_inner())
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
