//! The one binary encoding used for Raft messages and stored records (postcard over serde).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(#[from] postcard::Error);

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(value)?)
}

/// The CRC-32C (Castagnoli) of `bytes` (hardware-computed where the CPU offers it): what seals
/// a stored record (`store::integrity`) and what a snapshot sent to a peer carries.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// Reads a field that ends the stored form of its struct (the auth part of a meta state, its
/// tokens, the id in a token's claims): a value stored before the field existed ends just
/// before it, and reads back with the field's default (what it was). The stored form is
/// postcard, which has no field names to tell a missing field by.
pub fn trailing<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    // Only the end of the input can fail here in a state an earlier version wrote; a damaged
    // file fails elsewhere (redb checksums its pages).
    Ok(T::deserialize(d).unwrap_or_default())
}

impl From<CodecError> for std::io::Error {
    fn from(e: CodecError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}
