//! Credentials: a client given a user and password ([`ClientOptions::credentials`]
//! (crate::ClientOptions::credentials)) authenticates before its first call, sends the token it
//! got with every call (`authorization: Bearer <token>`), and authenticates again shortly
//! before the token expires, or when a node says it expired or was revoked. Against a cluster
//! without auth the node answers with no token and calls go without one.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_proto::v1::auth_client::AuthClient;
use flotilla_proto::v1::{AuthenticateRequest, ErrorReason};
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The metadata key of the token.
const AUTHORIZATION: &str = "authorization";

/// How long before its expiry a token is replaced.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

/// How long a "no auth needed" answer is trusted before asking again.
const NO_AUTH_RECHECK: Duration = Duration::from_secs(60);

/// A user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// The channel every call goes through: it carries the current token, if any.
pub(crate) type AuthChannel = InterceptedService<Channel, TokenSlot>;

/// The token calls carry, shared by every channel of a client.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenSlot(Arc<RwLock<Option<MetadataValue<Ascii>>>>);

impl TokenSlot {
    fn set(&self, value: Option<MetadataValue<Ascii>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
}

impl Interceptor for TokenSlot {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = self.0.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            request.metadata_mut().insert(AUTHORIZATION, v.clone());
        }
        Ok(request)
    }
}

/// Keeps a client's token fresh.
#[derive(Debug)]
pub(crate) struct Authenticator {
    credentials: Option<Credentials>,
    pub(crate) slot: TokenSlot,
    /// Until when the token in the slot (or the absence of one) may be used.
    valid_until: tokio::sync::Mutex<Option<Instant>>,
}

impl Authenticator {
    pub(crate) fn new(credentials: Option<Credentials>) -> Authenticator {
        Authenticator {
            credentials,
            slot: TokenSlot::default(),
            valid_until: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends `token` with every call (a token made by `token create`).
    pub(crate) fn use_token(&self, token: &str) -> crate::Result<()> {
        let value = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| crate::Error::InvalidArgument("a token is printable ASCII text".into()))?;
        self.slot.set(Some(value));
        Ok(())
    }

    /// Makes sure the slot holds a usable token (authenticating through `channel` if not).
    pub(crate) async fn ready(
        &self,
        channel: AuthChannel,
        timeout: Duration,
    ) -> Result<(), Status> {
        let Some(credentials) = &self.credentials else {
            return Ok(());
        };
        let mut valid_until = self.valid_until.lock().await;
        if valid_until.is_some_and(|t| t > Instant::now()) {
            return Ok(());
        }
        let mut request = Request::new(AuthenticateRequest {
            user: credentials.user.clone(),
            password: credentials.password.clone(),
        });
        request.set_timeout(timeout);
        let answer = AuthClient::new(channel)
            .authenticate(request)
            .await?
            .into_inner();
        if answer.token.is_empty() {
            self.slot.set(None);
            *valid_until = Some(Instant::now() + NO_AUTH_RECHECK);
            return Ok(());
        }
        let value = format!("Bearer {}", answer.token)
            .parse()
            .map_err(|_| Status::internal("the node answered a token that is not ASCII"))?;
        self.slot.set(Some(value));
        *valid_until = Some(Instant::now() + usable_for(answer.expires_at_unix_ms, now_unix_ms()));
        Ok(())
    }

    /// True (and the token dropped) when `status` says the call needs a new token and this
    /// client can get one.
    pub(crate) async fn stale(&self, status: &Status) -> bool {
        if self.credentials.is_none() || status.code() != Code::Unauthenticated {
            return false;
        }
        let renew = matches!(
            flotilla_proto::reason_of(status),
            Some(ErrorReason::TokenExpired | ErrorReason::TokenInvalid | ErrorReason::AuthRequired)
        );
        if renew {
            *self.valid_until.lock().await = None;
        }
        renew
    }
}

/// How long a token expiring at `expires_ms` may be used from `now_ms`: until shortly before
/// it expires (a quarter of its life when that is shorter, for very short tokens).
pub(crate) fn usable_for(expires_ms: u64, now_ms: u64) -> Duration {
    let life = Duration::from_millis(expires_ms.saturating_sub(now_ms));
    life.saturating_sub(RENEW_BEFORE.min(life / 4))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_before_it_expires() {
        assert_eq!(usable_for(600_000, 0), Duration::from_secs(570));
        assert_eq!(usable_for(4_000, 0), Duration::from_secs(3));
        assert_eq!(usable_for(1_000, 5_000), Duration::ZERO);
    }

    #[test]
    fn the_password_is_not_printed() {
        let c = Credentials::new("ann", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn only_a_refused_token_asks_for_a_new_one() {
        let a = Authenticator::new(Some(Credentials::new("ann", "x")));
        let expired = flotilla_proto::with_reason(
            Status::unauthenticated("expired"),
            ErrorReason::TokenExpired,
        );
        assert!(a.stale(&expired).await);
        let wrong = flotilla_proto::with_reason(
            Status::unauthenticated("bad"),
            ErrorReason::BadCredentials,
        );
        assert!(!a.stale(&wrong).await);
        assert!(!a.stale(&Status::permission_denied("no")).await);
        let none = Authenticator::new(None);
        assert!(!none.stale(&expired).await);
    }
}
