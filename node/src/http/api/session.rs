//! A session's floor over HTTP: the `at_least` parameter of reads, listings, queries and live
//! queries names the highest revision of each shard the client has seen (each document, write
//! answer and query page says its shard and revision). The shard is then read from a replica
//! that has applied at least that revision: a replica behind waits briefly, then answers 503
//! with reason `ERROR_REASON_REPLICA_BEHIND`, and the client asks another node. Stale reads
//! then never go back in time for that client.

use flotilla_proto::v1;

use super::error::ApiError;

/// Most shards a floor may name.
const MAX_SHARDS: usize = 4096;

/// The floor `shard:revision,shard:revision` (`0:120,1:88`) of a query parameter; none when
/// absent or empty.
pub fn at_least(param: Option<&str>) -> Result<Vec<v1::ShardRevision>, ApiError> {
    let Some(text) = param.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let pairs: Vec<&str> = text.split(',').collect();
    if pairs.len() > MAX_SHARDS {
        return Err(ApiError::invalid(format!(
            "at_least names {} shards; at most {MAX_SHARDS}",
            pairs.len()
        )));
    }
    pairs
        .into_iter()
        .map(|pair| {
            let parsed = pair
                .split_once(':')
                .and_then(|(s, r)| Some((s.trim().parse().ok()?, r.trim().parse().ok()?)));
            match parsed {
                Some((shard, revision)) => Ok(v1::ShardRevision { shard, revision }),
                None => Err(ApiError::invalid(format!(
                    "at_least: {pair:?} is not shard:revision (e.g. at_least=0:120,1:88)"
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_parsed_and_malformed_ones_refused() {
        assert!(at_least(None).expect("absent").is_empty());
        assert!(at_least(Some(" ")).expect("empty").is_empty());
        let floor = at_least(Some("0:120, 1:88")).expect("two shards");
        assert_eq!(
            floor,
            vec![
                v1::ShardRevision {
                    shard: 0,
                    revision: 120
                },
                v1::ShardRevision {
                    shard: 1,
                    revision: 88
                }
            ]
        );
        for bad in ["0", "a:1", "0:-1", "0:1,", ":", "1:2:3", "99999999999:1"] {
            let refused = at_least(Some(bad));
            assert!(refused.is_err(), "{bad:?} accepted: {refused:?}");
        }
    }
}
