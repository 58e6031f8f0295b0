//! The one binary encoding used for Raft messages and stored records (postcard over serde).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(#[from] postcard::Error);

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(value)?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}

impl From<CodecError> for std::io::Error {
    fn from(e: CodecError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}
