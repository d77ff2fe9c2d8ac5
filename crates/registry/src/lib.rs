//! Strata's registry client: pull and push images over the OCI
//! distribution API (OCI and Docker v2 manifests, indexes resolved to a
//! platform), streaming layers into the store.
//!
//! Why a small synchronous stack: Strata's core is synchronous, and a
//! registry client needs little: `ureq` (on rustls, with the system's
//! roots) does HTTP in a handful of crates, where `oci-client` brings
//! tokio, reqwest and about 140 crates. `http-auth` parses
//! `WWW-Authenticate`; references follow Docker's normalisation through the
//! store's `reference` (oci-spec's grammar).
//!
//! Rooms: [`endpoint`] (hosts, HTTPS or plain HTTP), [`creds`]
//! (credential files, `login`), [`auth`] (challenges, tokens), [`client`]
//! (requests, redirects, errors), [`manifest`] (manifests, indexes,
//! platforms), [`download`] (blobs with resume and retry, into files that
//! are applied while they grow), [`pull`], [`push`].

pub mod auth;
pub mod client;
pub mod creds;
pub mod download;
pub mod endpoint;
pub mod error;
pub mod manifest;
pub mod pull;
pub mod push;

pub use client::{Client, ClientOpts};
pub use error::{Error, ErrorKind, Result};
