//! Auth tokens: `<claims>.<mac>`, both base64url, where the claims name the user, the user's
//! token generation and the expiry, and the mac is their HMAC-SHA256 under the cluster's
//! secret (kept in the meta state, so that every node verifies what any node issued). A
//! token says who the caller is, not what they may do: permissions are read from the meta
//! state on every call, so a revoked grant takes effect at once. A token made by `token
//! create` also carries its id, and is accepted only while the meta state records that id
//! (`meta::auth::TokenRecord`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Longest token accepted (anything longer is not one of ours).
const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub user: String,
    /// The user's generation when the token was issued (see `meta::auth::User`).
    pub generation: u64,
    /// Unix milliseconds.
    pub expires_ms: u64,
    /// The id of a recorded token (`token create`); `None` for the token of a password.
    #[serde(default, deserialize_with = "crate::codec::trailing")]
    pub id: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed or was not signed by this cluster")]
    Invalid,
    #[error("the token expired")]
    Expired,
}

/// A token carrying `claims`, signed with `secret`.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    // Encoding plain strings and integers cannot fail.
    let body = URL_SAFE_NO_PAD.encode(postcard::to_stdvec(claims).unwrap_or_default());
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mac = URL_SAFE_NO_PAD.encode(hmac::sign(&key, body.as_bytes()).as_ref());
    format!("{body}.{mac}")
}

/// The claims of `token` if `secret` signed it and it has not expired at `now_ms`.
pub fn verify(secret: &[u8], token: &str, now_ms: u64) -> Result<Claims, TokenError> {
    if secret.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Invalid);
    }
    let (body, mac) = token.split_once('.').ok_or(TokenError::Invalid)?;
    let mac = URL_SAFE_NO_PAD
        .decode(mac)
        .map_err(|_| TokenError::Invalid)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, body.as_bytes(), &mac).map_err(|_| TokenError::Invalid)?;
    let claims = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Invalid)?;
    let claims: Claims = postcard::from_bytes(&claims).map_err(|_| TokenError::Invalid)?;
    if claims.expires_ms <= now_ms {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_ms: u64) -> Claims {
        Claims {
            user: "ann".into(),
            generation: 3,
            expires_ms,
            id: Some("t1".into()),
        }
    }

    #[test]
    fn a_token_verifies_under_its_secret_until_it_expires() {
        let t = sign(b"secret", &claims(1_000));
        assert_eq!(verify(b"secret", &t, 999), Ok(claims(1_000)));
        assert_eq!(verify(b"secret", &t, 1_000), Err(TokenError::Expired));
        assert_eq!(verify(b"other", &t, 0), Err(TokenError::Invalid));
        assert_eq!(verify(b"", &t, 0), Err(TokenError::Invalid));
    }

    #[test]
    fn a_changed_or_malformed_token_is_invalid() {
        let t = sign(b"secret", &claims(1_000));
        let (body, mac) = t.split_once('.').unwrap();
        let forged = sign(b"guess", &claims(u64::MAX));
        let (forged_body, _) = forged.split_once('.').unwrap();
        for bad in [
            format!("{forged_body}.{mac}"),
            format!("{body}.{body}"),
            format!("{body}{mac}"),
            String::new(),
            ".".into(),
            "a.b.c".into(),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(
                verify(b"secret", &bad, 0),
                Err(TokenError::Invalid),
                "{bad}"
            );
        }
    }
}
