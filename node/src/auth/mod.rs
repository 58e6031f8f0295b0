//! Authentication: password hashes ([`password`]) and the signed, expiring tokens that users
//! get for them ([`token`]). Who may do what is the meta state's business
//! (`meta::auth`); the gRPC layer resolves a caller and checks it (`grpc::guard`).

pub mod password;
pub mod token;
