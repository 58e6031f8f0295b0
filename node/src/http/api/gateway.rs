//! The API's way into the node: gRPC clients over the client port's own service stack, called
//! in process ([`crate::grpc::ClientPort`]), so that every layer of the client port (request
//! metrics, authentication, limits) applies to HTTP requests too. An `Authorization` header
//! travels as the call's `authorization` metadata.

use axum::http::{HeaderMap, header};
use flotilla_proto::v1::admin_client::AdminClient;
use flotilla_proto::v1::documents_client::DocumentsClient;
use flotilla_proto::v1::transactions_client::TransactionsClient;
use tonic::metadata::MetadataMap;

use crate::grpc::ClientService;
use crate::network::MAX_PEER_MESSAGE_BYTES as MAX_MESSAGE_BYTES;

/// Headers of an HTTP request that go along with the gRPC call it becomes.
const FORWARDED: [header::HeaderName; 1] = [header::AUTHORIZATION];

#[derive(Clone)]
pub struct Gateway {
    client: ClientService,
}

impl Gateway {
    pub fn new(client: ClientService) -> Gateway {
        Gateway { client }
    }

    pub fn documents(&self) -> DocumentsClient<ClientService> {
        DocumentsClient::new(self.client.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn transactions(&self) -> TransactionsClient<ClientService> {
        TransactionsClient::new(self.client.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn admin(&self) -> AdminClient<ClientService> {
        AdminClient::new(self.client.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// `message` as a gRPC request carrying the HTTP request's credentials.
pub fn request<T>(message: T, headers: &HeaderMap) -> tonic::Request<T> {
    let mut forwarded = HeaderMap::new();
    for name in FORWARDED {
        for value in headers.get_all(&name) {
            forwarded.append(name.clone(), value.clone());
        }
    }
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = MetadataMap::from_headers(forwarded);
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_authorization_header_travels_as_metadata_and_nothing_else_does() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        let request = request((), &headers);
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer s3cret")
        );
        assert!(request.metadata().get("cookie").is_none());
    }
}
